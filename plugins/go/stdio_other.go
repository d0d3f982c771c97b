//go:build !unix

package plugin

import "os"

// takeStdout returns standard output for the protocol and sends os.Stdout writes to standard
// error (file descriptor 1 itself is left alone on this platform).
func takeStdout() (*os.File, error) {
	out := os.Stdout
	os.Stdout = os.Stderr
	return out, nil
}
