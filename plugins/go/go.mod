module hostd.dev/plugin

go 1.22
