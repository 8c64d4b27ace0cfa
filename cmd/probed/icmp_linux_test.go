package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// The echoes' payload sizes, one per behaviour, as TestTrace has ports.
const (
	echoDropped  = 101 // the target drops them
	echoRejected = 102 // r2 answers them administratively prohibited
)

// TestICMP sends echoes across a chain of namespaces, client - r1 - r2 -
// r3 - target, in both families, from two probeds in the client's
// namespace: one as uid 65532 with no capability, whose group
// net.ipv4.ping_group_range allows datagram ICMP sockets, and one as
// root, whose group it does not, so that it falls back to a raw socket.
// Each fault is made for real: an echo over the links' MTU, fragmented
// or not allowed to be, a TTL that runs out at r2, a target that
// drops the echoes, r2 rejecting them, a target that answers with forged
// replies, and r1 without a route to the target.
func TestICMP(t *testing.T) {
	c := netlab.NewChain(t, 3)
	c.Client.Sysctl(t, "net.ipv4.ping_group_range", "65532 65532")
	c.FilterEcho(t, 4, echoDropped, netlab.Drop)
	c.FilterEcho(t, 2, echoRejected, netlab.Reject)

	type probed struct {
		name   string
		socket netprobev1.IcmpSocket
		probe  netprobev1.ProbeServiceClient
	}
	unprivileged := startUnprivileged(t, c.Client)
	root := startIn(t, c.Client)
	probeds := []probed{
		{"unprivileged", netprobev1.IcmpSocket_ICMP_SOCKET_DATAGRAM, netprobev1.NewProbeServiceClient(dialIn(t, c.Client, unprivileged.Addr))},
		{"raw", netprobev1.IcmpSocket_ICMP_SOCKET_RAW, netprobev1.NewProbeServiceClient(dialIn(t, c.Client, root.Addr))},
	}
	type family = chainFamily
	v4, v6 := chainFamilies(c)

	// echo sends an echo to f's target, and checks its socket and what
	// it sent.
	echo := func(t *testing.T, p probed, f family, timeout time.Duration, opts *netprobev1.IcmpOptions) *netprobev1.ConnectResponse {
		t.Helper()
		resp, err := p.probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
			Target:  &netprobev1.Target{Host: f.target.String(), Network: netprobev1.Network_NETWORK_ICMP},
			Timeout: durationpb.New(timeout),
			Icmp:    opts,
		})
		if err != nil {
			t.Fatal(err)
		}
		r := resp.GetIcmp()
		if r.GetSocket() != p.socket || r.GetPayloadBytes() != max(opts.GetPayloadBytes(), 56) {
			t.Errorf("echo %v, want one of %d bytes from a %v", r, max(opts.GetPayloadBytes(), 56), p.socket)
		}
		if resp.GetPeerAddress() != f.target.String() || resp.GetLocalAddress() != f.client.String() {
			t.Errorf("echo from %q to %q, want from %s to %s", resp.GetLocalAddress(), resp.GetPeerAddress(), f.client, f.target)
		}
		return resp
	}
	// failed checks an echo's error: at STAGE_ECHO, with its reason and
	// errno, and the ICMP error that came back (nil: none).
	failed := func(t *testing.T, resp *netprobev1.ConnectResponse, reason netprobev1.Reason, errno string, icmpErr *netprobev1.IcmpError) {
		t.Helper()
		pe := resp.GetError()
		if pe.GetStage() != netprobev1.Stage_STAGE_ECHO || pe.GetReason() != reason || pe.GetErrno() != errno || pe.GetAddress() != resp.GetPeerAddress() {
			t.Errorf("error %v, want STAGE_ECHO, %v, errno %q", pe, reason, errno)
		}
		if got := pe.GetIcmp(); got.GetAddress() != icmpErr.GetAddress() || got.GetIcmpType() != icmpErr.GetIcmpType() || got.GetIcmpCode() != icmpErr.GetIcmpCode() || (got == nil) != (icmpErr == nil) {
			t.Errorf("ICMP error %v, want %v", got, icmpErr)
		}
		if r := resp.GetIcmp(); r.GetReplyAddress() != "" || r.GetRtt() != nil || r.GetReplyTtl() != 0 {
			t.Errorf("a failed echo reports a reply: %v", r)
		}
	}
	ttl := func(n uint32) *uint32 { return &n }

	t.Run("faults", func(t *testing.T) {
		for _, p := range probeds {
			for _, f := range []family{v4, v6} {
				t.Run(p.name+"/"+f.name, func(t *testing.T) {
					t.Parallel()
					t.Run("reply", func(t *testing.T) {
						resp := echo(t, p, f, 5*time.Second, nil)
						if resp.GetError() != nil {
							t.Fatalf("error %v", resp.GetError())
						}
						// The target's replies leave with TTL 64, and the
						// three routers take one each.
						r := resp.GetIcmp()
						if r.GetReplyAddress() != f.target.String() || r.GetReplyTtl() != 61 || r.GetRtt().AsDuration() <= 0 {
							t.Errorf("reply %v, want one from %s with TTL 61 and an rtt", r, f.target)
						}
					})
					// The chain's links have an MTU of 1,500 bytes: 1,473 bytes
					// of data are over it in both families.
					t.Run("fragmented", func(t *testing.T) {
						resp := echo(t, p, f, 5*time.Second, &netprobev1.IcmpOptions{PayloadBytes: 1473})
						if resp.GetError() != nil || resp.GetIcmp().GetReplyAddress() != f.target.String() {
							t.Errorf("error %v, reply %v: want the fragments' reply", resp.GetError(), resp.GetIcmp())
						}
					})
					t.Run("over the MTU, don't fragment", func(t *testing.T) {
						resp := echo(t, p, f, 5*time.Second, &netprobev1.IcmpOptions{PayloadBytes: 1473, DontFragment: true})
						if pe := resp.GetError(); pe.GetStage() != netprobev1.Stage_STAGE_SEND || pe.GetReason() != netprobev1.Reason_REASON_OTHER || pe.GetErrno() != "EMSGSIZE" || pe.GetAddress() != f.target.String() {
							t.Errorf("error %v, want STAGE_SEND with EMSGSIZE", pe)
						}
					})
					t.Run("TTL out at r2", func(t *testing.T) {
						resp := echo(t, p, f, 5*time.Second, &netprobev1.IcmpOptions{Ttl: ttl(2)})
						failed(t, resp, netprobev1.Reason_REASON_TTL_EXCEEDED, "", &netprobev1.IcmpError{
							Address: f.routers[1].String(), IcmpType: f.timeExceeded,
						})
					})
					t.Run("dropped by the target", func(t *testing.T) {
						resp := echo(t, p, f, 500*time.Millisecond, &netprobev1.IcmpOptions{PayloadBytes: echoDropped})
						failed(t, resp, netprobev1.Reason_REASON_TIMEOUT, "", nil)
						// A generous bound on the timeout's firing.
						if d := resp.GetError().GetElapsed().AsDuration(); d < 500*time.Millisecond || d > 750*time.Millisecond {
							t.Errorf("timed out after %v, want 500ms", d)
						}
					})
					t.Run("another echo's errors", func(t *testing.T) {
						// While this echo waits for a reply that never comes,
						// echoes of TTL 2 to the same target draw time exceeded
						// from r2: a raw socket is told of every error for its
						// target, and only those for its own echo count.
						ctx, cancel := context.WithCancel(probetest.Context(t))
						others := make(chan error, 1)
						go func() {
							// 20 a second, within probed's rate for a caller,
							// which the four families and sockets share.
							tick := time.NewTicker(50 * time.Millisecond)
							defer tick.Stop()
							var err error
							for err == nil && ctx.Err() == nil {
								_, err = p.probe.Connect(ctx, &netprobev1.ConnectRequest{
									Target: &netprobev1.Target{Host: f.target.String(), Network: netprobev1.Network_NETWORK_ICMP},
									Icmp:   &netprobev1.IcmpOptions{Ttl: ttl(2)},
								})
								select {
								case <-tick.C:
								case <-ctx.Done():
								}
							}
							if ctx.Err() != nil {
								err = nil // cancelled once the echo was over
							}
							others <- err
						}()
						resp := echo(t, p, f, time.Second, &netprobev1.IcmpOptions{PayloadBytes: echoDropped})
						cancel()
						if err := <-others; err != nil {
							t.Fatal(err)
						}
						failed(t, resp, netprobev1.Reason_REASON_TIMEOUT, "", nil)
					})
					t.Run("rejected at r2", func(t *testing.T) {
						resp := echo(t, p, f, 5*time.Second, &netprobev1.IcmpOptions{PayloadBytes: echoRejected})
						failed(t, resp, f.prohibitedReason, f.prohibitedErrno, &netprobev1.IcmpError{
							Address: f.routers[1].String(), IcmpType: f.unreachable, IcmpCode: f.prohibited,
						})
					})
				})
			}
		}
	})
	// A reply with the echo's identifier, sequence number and data, but
	// from another address than the echo went to, is not its reply: r3
	// rewrites the target's replies' source, as an on-path box could
	// forge them. A datagram socket takes such a reply (the kernel
	// matches its identifier alone), so the service checks the sender.
	// And an echo whose time is over before it goes out is not sent.
	t.Run("a reply from another address", func(t *testing.T) {
		c.Routers[2].NFT(t, fmt.Sprintf(`table ip netprobe_test_rewrite {
	chain forward {
		type filter hook forward priority 0;
		ip saddr %s icmp type echo-reply ip saddr set %s
	}
}
`, v4.target, v4.routers[2]))
		for _, p := range probeds {
			t.Run(p.name, func(t *testing.T) {
				failed(t, echo(t, p, v4, time.Second, nil), netprobev1.Reason_REASON_TIMEOUT, "", nil)
			})
		}
	})
	t.Run("time over before the echo", func(t *testing.T) {
		for _, p := range probeds {
			t.Run(p.name, func(t *testing.T) {
				// Several times: the echo used to go out most of them.
				for range 5 {
					failed(t, echo(t, p, v6, time.Nanosecond, nil), netprobev1.Reason_REASON_TIMEOUT, "", nil)
				}
			})
		}
	})
	// Then the target answers no echo itself, only with forgeries: a
	// reply counts only when it has the echo's identifier, sequence and
	// data, and an ICMP error only when it answers the echo, so each echo
	// times out, whatever the flood of errors that answer another.
	t.Run("forged replies", func(t *testing.T) {
		forgeReplies(t, c.Target)
		for _, p := range probeds {
			for _, f := range []family{v4, v6} {
				t.Run(p.name+"/"+f.name, func(t *testing.T) {
					resp := echo(t, p, f, time.Second, nil)
					failed(t, resp, netprobev1.Reason_REASON_TIMEOUT, "", nil)
				})
			}
		}
	})
	// Last, as it breaks the chain.
	t.Run("no route at r1", func(t *testing.T) {
		c.NoRoute(t, 1)
		for _, p := range probeds {
			for _, f := range []family{v4, v6} {
				t.Run(p.name+"/"+f.name, func(t *testing.T) {
					resp := echo(t, p, f, 5*time.Second, nil)
					failed(t, resp, netprobev1.Reason_REASON_NETWORK_UNREACHABLE, "ENETUNREACH", &netprobev1.IcmpError{
						Address: f.routers[0].String(), IcmpType: f.unreachable,
					})
				})
			}
		}
	})
}

// forgeReplies makes host answer echoes with forgeries only: the kernel's
// own replies are turned off, and a raw socket answers each request three
// times, with its identifier, its sequence number and its data each
// changed in turn.
func forgeReplies(t *testing.T, host *netlab.Host) {
	host.Sysctl(t, "net.ipv4.icmp_echo_ignore_all", "1")
	host.Sysctl(t, "net.ipv6.icmp.echo_ignore_all", "1")
	for _, family := range []struct {
		network, addr string
		proto         int
		request       icmp.Type
		reply         icmp.Type
		unreachable   icmp.Type
	}{
		{"ip4:icmp", host.V4.String(), 1, ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply, ipv4.ICMPTypeDestinationUnreachable},
		{"ip6:ipv6-icmp", host.V6.String(), 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, ipv6.ICMPTypeDestinationUnreachable},
	} {
		var conn net.PacketConn
		if err := host.Do(func() (err error) {
			conn, err = net.ListenPacket(family.network, family.addr)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := conn.ReadFrom(buf)
				if err != nil {
					return // closed
				}
				m, err := icmp.ParseMessage(family.proto, buf[:n])
				if err != nil || m.Type != family.request {
					continue
				}
				req := m.Body.(*icmp.Echo)
				for _, forged := range []icmp.Echo{
					{ID: req.ID + 1, Seq: req.Seq, Data: req.Data},
					{ID: req.ID, Seq: req.Seq + 1, Data: req.Data},
					{ID: req.ID, Seq: req.Seq, Data: append([]byte{^req.Data[0]}, req.Data[1:]...)},
				} {
					b, err := (&icmp.Message{Type: family.reply, Body: &forged}).Marshal(nil)
					if err == nil {
						conn.WriteTo(b, from)
					}
				}
				// Then a flood of unreachables that answer another echo of
				// the same identifier (the next sequence number): each
				// sets the socket's error, which only an error that
				// answers this echo may make a failure (once 16 reads
				// in a row failed on them).
				quoted, err := (&icmp.Message{Type: family.request, Body: &icmp.Echo{ID: req.ID, Seq: req.Seq + 1, Data: req.Data[:8]}}).Marshal(nil)
				if err != nil {
					continue
				}
				src, _ := netip.ParseAddr(from.String())
				b, err := (&icmp.Message{Type: family.unreachable, Body: &icmp.DstUnreach{Data: append(ipHeader(src, netip.MustParseAddr(family.addr), family.proto, len(quoted)), quoted...)}}).Marshal(nil)
				if err != nil {
					continue
				}
				for range 2000 {
					conn.WriteTo(b, from)
				}
			}
		}()
	}
}

// ipHeader is the IP header of a packet of length bytes of protocol proto
// from src to dst, as an ICMP error quotes it.
func ipHeader(src, dst netip.Addr, proto, length int) []byte {
	if src.Is4() {
		h := make([]byte, 20)
		h[0], h[9] = 0x45, byte(proto)
		h[2], h[3] = byte((20+length)>>8), byte(20+length)
		h[8] = 64
		copy(h[12:16], src.AsSlice())
		copy(h[16:20], dst.AsSlice())
		return h
	}
	h := make([]byte, 40)
	h[0] = 0x60
	h[4], h[5], h[6], h[7] = byte(length>>8), byte(length), byte(proto), 64
	copy(h[8:24], src.AsSlice())
	copy(h[24:40], dst.AsSlice())
	return h
}

// TestICMPSocketDenied runs probed as uid 65532 with no capability in a
// namespace whose net.ipv4.ping_group_range is "1 0", a new namespace's
// (and the kernel's) default, which allows no group: it may have neither
// kind of ICMP socket, and an echo says so, naming the sysctl and the
// capability, before any packet is sent.
func TestICMPSocketDenied(t *testing.T) {
	host := &netlab.Host{Namespace: netlab.NewNamespace(t)}
	host.Sysctl(t, "net.ipv4.ping_group_range", "1 0")
	p := startUnprivileged(t, host)
	probe := netprobev1.NewProbeServiceClient(dialIn(t, host, p.Addr))
	for _, addr := range []string{"127.0.0.1", "::1"} {
		resp, err := probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{
			Target: &netprobev1.Target{Host: addr, Network: netprobev1.Network_NETWORK_ICMP},
		})
		if err != nil {
			t.Fatal(err)
		}
		pe := resp.GetError()
		if pe.GetStage() != netprobev1.Stage_STAGE_SOCKET || pe.GetReason() != netprobev1.Reason_REASON_PROHIBITED || pe.GetErrno() != "EACCES" || pe.GetAddress() != addr {
			t.Errorf("%s: error %v, want STAGE_SOCKET, REASON_PROHIBITED with EACCES", addr, pe)
		}
		for _, want := range []string{`net.ipv4.ping_group_range ("1 0" here)`, "gid 65532", "CAP_NET_RAW"} {
			if !strings.Contains(pe.GetMessage(), want) {
				t.Errorf("%s: message %q does not say %s", addr, pe.GetMessage(), want)
			}
		}
		if resp.GetIcmp().GetSocket() != netprobev1.IcmpSocket_ICMP_SOCKET_UNSPECIFIED {
			t.Errorf("%s: echo %v, want no socket", addr, resp.GetIcmp())
		}
	}

	// With icmp modules it says so as it starts, where a probed that can
	// send echoes (root's raw socket), or has no icmp module, says nothing.
	file := filepath.Join(probetest.SharedDir(t), "blackbox.yml")
	if err := os.WriteFile(file, []byte("modules:\n  icmp:\n    prober: icmp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const warning = "icmp modules cannot run here: their scrapes will fail at STAGE_SOCKET"
	for _, tc := range []struct {
		name string
		p    *probetest.Probed
		want int
	}{
		{"no privilege, an icmp module", startUnprivileged(t, host, "--modules-file="+file), 1},
		{"no privilege, no icmp module", p, 0},
		{"root, an icmp module", startIn(t, host, "--modules-file="+file), 0},
	} {
		if got := tc.p.Logged(warning); got != tc.want {
			t.Errorf("%s: %d warnings that icmp modules cannot run, want %d", tc.name, got, tc.want)
		}
	}
}

// startIn runs probed in host's namespace as this test's user, root,
// with its capabilities.
func startIn(t *testing.T, host *netlab.Host, args ...string) *probetest.Probed {
	t.Helper()
	var p *probetest.Probed
	if err := host.Do(func() (err error) {
		p, err = probetest.Launch(exec.Command(probedBin, append([]string{"--listen=127.0.0.1:0"}, args...)...))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}
