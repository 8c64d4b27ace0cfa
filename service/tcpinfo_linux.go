package service

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// tcpInfo reads the kernel's view of a TCP connection (TCP_INFO), under
// any TLS; nil for anything else.
func tcpInfo(conn net.Conn) *netprobev1.TcpInfo {
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = nc.NetConn()
	}
	c, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var info *unix.TCPInfo
	var getErr error
	if err := raw.Control(func(fd uintptr) {
		info, getErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || getErr != nil {
		return nil
	}
	us := func(v uint32) *durationpb.Duration { return durationpb.New(time.Duration(v) * time.Microsecond) }
	return &netprobev1.TcpInfo{
		Rtt:                        us(info.Rtt),
		RttVar:                     us(info.Rttvar),
		MinRtt:                     us(info.Min_rtt),
		Retransmits:                uint32(info.Retransmits),
		TotalRetransmits:           info.Total_retrans,
		Lost:                       info.Lost,
		SndMss:                     info.Snd_mss,
		RcvMss:                     info.Rcv_mss,
		PathMtu:                    info.Pmtu,
		SndCwnd:                    info.Snd_cwnd,
		DeliveryRateBytesPerSecond: info.Delivery_rate,
		BytesAcked:                 info.Bytes_acked,
		BytesReceived:              info.Bytes_received,
	}
}
