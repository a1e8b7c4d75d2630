module github.com/jetserve/jetserve/cmd/jetserve

go 1.26.0

require (
	github.com/jetserve/jetserve/examples v0.0.0
	github.com/jetserve/jetserve/pkg v0.0.0
	github.com/jetserve/jetserve/services/autoscaler v0.0.0
	github.com/jetserve/jetserve/services/ingress v0.0.0
	github.com/jetserve/jetserve/services/router v0.0.0
	github.com/jetserve/jetserve/services/scheduler v0.0.0
	github.com/jetserve/jetserve/services/worker v0.0.0
)

replace (
	github.com/jetserve/jetserve/examples => ../../examples
	github.com/jetserve/jetserve/pkg => ../../pkg
	github.com/jetserve/jetserve/services/autoscaler => ../../services/autoscaler
	github.com/jetserve/jetserve/services/ingress => ../../services/ingress
	github.com/jetserve/jetserve/services/router => ../../services/router
	github.com/jetserve/jetserve/services/scheduler => ../../services/scheduler
	github.com/jetserve/jetserve/services/worker => ../../services/worker
)
