package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// The chain's UDP target ports, one per behaviour.
const (
	udpPortEcho     = 90 // answers each datagram, and tells the test its source
	udpPortClosed   = 91 // nothing listens
	udpPortSilent   = 92 // open, but answers nothing
	udpPortDropped  = 93 // r2 drops the datagrams
	udpPortRejected = 94 // r2 answers them administratively prohibited
	udpPortLossy    = 95 // r2 loses every other datagram whose TTL ends there; nothing listens
	udpPortLate     = 96 // r1 answers late, r2 not at all; nothing listens
)

// TestTraceUDP traces UDP paths across a chain of namespaces, client - r1
// - r2 - r3 - target, in both families, from a probed that runs as uid
// 65532 with no capability: datagrams of two bytes, answered by the
// routers' time exceeded, and at the target by a port unreachable (a
// closed port), a datagram (an echo) or nothing (an open port that keeps
// silent); a drop, a reject and a lossy hop at r2; and a router whose
// answer comes late.
func TestTraceUDP(t *testing.T) {
	c := netlab.NewChain(t, 3)
	sources := map[netip.Addr]chan netip.AddrPort{}
	for _, ip := range []netip.Addr{c.Target.V4, c.Target.V6} {
		echo := c.Target.ListenPacket(t, netip.AddrPortFrom(ip, udpPortEcho).String())
		seen := make(chan netip.AddrPort, 16)
		sources[ip] = seen
		go func() {
			buf := make([]byte, 64)
			for {
				_, from, err := echo.ReadFrom(buf)
				if err != nil {
					return
				}
				seen <- from.(*net.UDPAddr).AddrPort()
				echo.WriteTo([]byte("pong"), from)
			}
		}()
		for _, p := range []uint16{udpPortSilent, udpPortDropped, udpPortRejected} {
			c.Target.ListenPacket(t, netip.AddrPortFrom(ip, p).String())
		}
	}
	c.FilterUDP(t, 2, udpPortDropped, netlab.Drop)
	c.FilterUDP(t, 2, udpPortRejected, netlab.Reject)
	c.LoseEveryOther(t, 2, udpPortLossy)
	lateSent := answerLate(t, c.Routers[0], netip.AddrPortFrom(c.Target.V4, udpPortLate), 1200*time.Millisecond)
	dropExpiring(t, c.Routers[1], netip.AddrPortFrom(c.Target.V4, udpPortLate))
	p := startUnprivileged(t, c.Client)
	probe := netprobev1.NewProbeServiceClient(dialIn(t, c.Client, p.Addr))

	type family = chainFamily
	v4, v6 := chainFamilies(c)

	// trace runs a Connect over UDP to port that always traces, with probes
	// a hop, and checks the path but for its times.
	trace := func(t *testing.T, f family, port uint32, probes uint32, want *netprobev1.Path) *netprobev1.Path {
		t.Helper()
		resp, err := probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
			Target: &netprobev1.Target{Host: f.target.String(), Port: port, Network: netprobev1.Network_NETWORK_UDP},
			Trace:  &netprobev1.TraceOptions{When: netprobev1.TraceWhen_TRACE_WHEN_ALWAYS, ProbesPerHop: probes},
		})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Error != nil {
			t.Errorf("probe error %v: a UDP connect sends nothing", resp.Error)
		}
		path := checkPath(t, f, port, want, resp.GetPath())
		for _, h := range path.GetHops() {
			if len(h.Rtts) != int(h.Answered) {
				t.Errorf("hop %d: %d rtts for %d answers", h.Ttl, len(h.Rtts), h.Answered)
			}
		}
		return path
	}
	// The hops before the target, hop n answered by router n.
	timeExceeded := func(f family, routers int, probes uint32) []*netprobev1.Hop {
		var hops []*netprobev1.Hop
		for i, r := range f.routers[:routers] {
			hops = append(hops, &netprobev1.Hop{
				Ttl: uint32(i + 1), Address: r.String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED,
				IcmpType: f.timeExceeded, Sent: probes, Answered: probes,
			})
		}
		return hops
	}
	// silence is the hops from ttl on that nothing answers: five end it.
	silence := func(from uint32) []*netprobev1.Hop {
		var hops []*netprobev1.Hop
		for ttl := from; ttl < from+5; ttl++ {
			hops = append(hops, &netprobev1.Hop{Ttl: ttl, Answer: netprobev1.HopAnswer_HOP_ANSWER_NONE, Sent: 1})
		}
		return hops
	}
	portUnreachable := func(f family, probes uint32) *netprobev1.Hop {
		return &netprobev1.Hop{
			Ttl: 4, Address: f.target.String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_PORT_UNREACHABLE,
			IcmpType: f.unreachable, IcmpCode: f.portUnreachable,
			Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED", Sent: probes, Answered: probes,
		}
	}

	// r1's time exceeded for the first probe comes 1.2s late, while the
	// second probe, which r2 drops, waits: it answers the first, and must
	// not be taken for the second's (the probes' data tells them apart).
	t.Run("a late answer", func(t *testing.T) {
		t.Parallel()
		silent := func(ttl uint32) *netprobev1.Hop {
			return &netprobev1.Hop{Ttl: ttl, Answer: netprobev1.HopAnswer_HOP_ANSWER_NONE, Sent: 1}
		}
		hops := append([]*netprobev1.Hop{silent(1), silent(2)}, timeExceeded(v4, 3, 1)[2], portUnreachable(v4, 1))
		trace(t, v4, udpPortLate, 1, &netprobev1.Path{Hops: hops, Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED})
		select {
		case <-lateSent:
		default:
			t.Error("r1 sent no late answer while the trace ran: the test tested nothing")
		}
	})

	for _, f := range []family{v4, v6} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			t.Run("closed port", func(t *testing.T) {
				t.Parallel()
				trace(t, f, udpPortClosed, 1, &netprobev1.Path{
					Hops:    append(timeExceeded(f, 3, 1), portUnreachable(f, 1)),
					Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
				})
			})
			t.Run("echo", func(t *testing.T) {
				t.Parallel()
				path := trace(t, f, udpPortEcho, 3, &netprobev1.Path{
					Hops: append(timeExceeded(f, 3, 3), &netprobev1.Hop{
						Ttl: 4, Address: f.target.String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_DATAGRAM, Sent: 3, Answered: 3,
					}),
					Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
				})
				// Paris traceroute, as the target saw it: the three probes
				// that reached it, all from the one port the path names.
				for i := range 3 {
					select {
					case from := <-sources[f.target]:
						if from.String() != path.Source {
							t.Errorf("probe %d came from %s, want the path's %s", i+1, from, path.Source)
						}
					case <-probetest.Context(t).Done():
						t.Fatal("the target did not see the 3 probes")
					}
				}
			})
			t.Run("silent port", func(t *testing.T) {
				t.Parallel()
				// The routers answer, the target does not: the path ends in
				// silence after the last router, as it would at a drop.
				trace(t, f, udpPortSilent, 1, &netprobev1.Path{
					Hops:     append(timeExceeded(f, 3, 1), silence(4)...),
					FlowHeld: true, End: netprobev1.PathEnd_PATH_END_SILENCE,
				})
			})
			t.Run("dropped at r2", func(t *testing.T) {
				t.Parallel()
				trace(t, f, udpPortDropped, 1, &netprobev1.Path{
					Hops:     append(timeExceeded(f, 1, 1), silence(2)...),
					FlowHeld: true, End: netprobev1.PathEnd_PATH_END_SILENCE,
				})
			})
			t.Run("rejected at r2", func(t *testing.T) {
				t.Parallel()
				trace(t, f, udpPortRejected, 1, &netprobev1.Path{
					Hops: append(timeExceeded(f, 1, 1), &netprobev1.Hop{
						Ttl: 2, Address: f.routers[1].String(), Answer: netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE,
						IcmpType: f.unreachable, IcmpCode: f.prohibited,
						Reason: f.prohibitedReason, Errno: f.prohibitedErrno, Sent: 1, Answered: 1,
					}),
					FlowHeld: true, End: netprobev1.PathEnd_PATH_END_UNREACHABLE,
				})
			})
			t.Run("lossy hop", func(t *testing.T) {
				t.Parallel()
				// r2 loses half the probes it would answer: 2 of 4, the
				// first and the third; the hops before and beyond lose none.
				hops := append(timeExceeded(f, 3, 4), portUnreachable(f, 4))
				hops[1].Answered = 2
				trace(t, f, udpPortLossy, 4, &netprobev1.Path{
					Hops: hops, Reached: true, FlowHeld: true, End: netprobev1.PathEnd_PATH_END_REACHED,
				})
			})
		})
	}
}

// dropExpiring makes router drop the IPv4 UDP datagrams to dst whose TTL
// ends there, without a word.
func dropExpiring(t *testing.T, router *netlab.Host, dst netip.AddrPort) {
	t.Helper()
	router.NFT(t, fmt.Sprintf(`table ip netprobe_test_expiring {
	chain pre {
		type filter hook prerouting priority -300;
		ip daddr %s udp dport %d ip ttl 1 drop
	}
}
`, dst.Addr(), dst.Port()))
}

// answerLate makes router answer the IPv4 UDP datagrams to dst whose TTL
// ends there late: it drops them (dropExpiring) and sends their ICMP time
// exceeded delay later, quoting the whole datagram, as a slow return path
// would bring it. The channel it returns is closed once one is sent.
func answerLate(t *testing.T, router *netlab.Host, dst netip.AddrPort, delay time.Duration) <-chan struct{} {
	t.Helper()
	dropExpiring(t, router, dst)
	var (
		capture int
		icmpOut net.PacketConn
	)
	if err := router.Do(func() (err error) {
		// A packet socket sees what comes in before netfilter drops it.
		if capture, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP))); err != nil {
			return err
		}
		icmpOut, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Reads wake every 100ms to see whether the test is over.
	if err := unix.SetsockoptTimeval(capture, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		wg.Wait()
		unix.Close(capture)
		icmpOut.Close()
	})
	sent := make(chan struct{})
	var once sync.Once
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			select {
			case <-done:
				return
			default:
			}
			n, from, err := unix.Recvfrom(capture, buf, 0)
			if err != nil {
				continue
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			pkt := buf[:n]
			if len(pkt) < 28 || pkt[0]>>4 != 4 || pkt[8] != 1 || pkt[9] != unix.IPPROTO_UDP {
				continue
			}
			ihl := int(pkt[0]&0x0f) * 4
			if len(pkt) < ihl+8 || netip.AddrFrom4([4]byte(pkt[16:20])) != dst.Addr() || binary.BigEndian.Uint16(pkt[ihl+2:]) != dst.Port() {
				continue
			}
			src := net.IP(slices.Clone(pkt[12:16]))
			te, err := (&icmp.Message{Type: ipv4.ICMPTypeTimeExceeded, Body: &icmp.TimeExceeded{Data: slices.Clone(pkt)}}).Marshal(nil)
			if err != nil {
				continue
			}
			wg.Go(func() {
				select {
				case <-done:
				case <-time.After(delay):
					if _, err := icmpOut.WriteTo(te, &net.IPAddr{IP: src}); err == nil {
						once.Do(func() { close(sent) })
					}
				}
			})
		}
	})
	return sent
}

// htons is v in network byte order, as a packet socket's protocol is.
func htons(v uint16) uint16 { return v<<8 | v>>8 }
