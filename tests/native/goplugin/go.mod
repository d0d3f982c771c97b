module hostd.test/goplugin

go 1.22
