//go:build unix

package plugin

import (
	"os"
	"syscall"
)

// takeStdout keeps the process's standard output for the protocol and points file descriptor 1
// (and os.Stdout) at standard error, so stray prints never corrupt the protocol stream.
func takeStdout() (*os.File, error) {
	fd, err := syscall.Dup(1)
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(fd)
	if err := dup2(2, 1); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	out := os.NewFile(uintptr(fd), "hostd-protocol")
	os.Stdout = os.Stderr
	return out, nil
}
