//go:build tools

// Package tools pins the cni binary built by ../build.sh.
package tools

import _ "github.com/containernetworking/cni/cnitool"
