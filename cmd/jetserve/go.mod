module github.com/jetserve/jetserve/cmd/jetserve

go 1.26.0

require github.com/jetserve/jetserve/pkg v0.0.0

replace github.com/jetserve/jetserve/pkg => ../../pkg
