module github.com/peergate/peergate

go 1.26.8

require (
	golang.org/x/net v0.62.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/yl2chen/cidranger v1.0.2 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
