//go:build !linux

package service

import (
	"net"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// tcpInfo is nil: only Linux gives TCP_INFO as netprobe reads it.
func tcpInfo(net.Conn) *netprobev1.TcpInfo { return nil }
