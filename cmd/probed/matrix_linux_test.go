package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/dnstest"
	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/starttls"
)

// The fault matrix: each row is a network condition, made for real on a
// LAN of network namespaces, and the stage, reason and errno netprobe must
// report for it. The table of docs/fault-matrix.md is
// rendered from these rows (TestMatrixTable).

// The target host's ports, one per behaviour.
const (
	portHTTP        = 80
	portDropped     = 81 // nft drops the SYN
	portReset       = 82 // nft answers with a TCP reset
	portHostUnreach = 83 // nft answers ICMP host (v6: address) unreachable
	portProhibited  = 84 // nft answers ICMP administratively prohibited
	portNetUnreach  = 85 // nft answers ICMP network unreachable (v6: no route)
	portV6Dropped   = 86 // only IPv6 SYNs are dropped
	portV6Reset     = 87 // only IPv6 SYNs are reset
	portV4Dropped   = 88 // only IPv4 SYNs are dropped
	portUDPClosed   = 90 // nothing listens
	portUDPDropped  = 91 // nft drops the datagram
	portUDPEcho     = 92
	portResetAtOnce = 100
	portResetAfter  = 101
	portReadLittle  = 102
	portNeverRead   = 103
	portStall       = 104
	portHalfClose   = 105
	portDrip        = 106
	portDripCut     = 107 // a drip that the test firewalls mid-transfer
	portHold        = 108 // accepts and holds, for the file descriptor row
	portSMTPNoTLS   = 109 // an SMTP server that refuses STARTTLS
	portSMTPTLS     = 110 // an SMTP server with STARTTLS
	portMTLS        = 111 // a TLS server that requires a client certificate
	portLossy       = 112 // nft drops one in four of the segments with data sent to it
)

// The TLS servers' certificates are for this name, from the lab's CA.
const tlsName = "localhost"

// ruleset is the target's firewall.
var ruleset = fmt.Sprintf(`
table inet netprobe {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport %d drop
		tcp dport %d reject with tcp reset
		meta nfproto ipv4 tcp dport %d reject with icmp type host-unreachable
		meta nfproto ipv6 tcp dport %d reject with icmpv6 type addr-unreachable
		meta nfproto ipv4 tcp dport %d reject with icmp type admin-prohibited
		meta nfproto ipv6 tcp dport %d reject with icmpv6 type admin-prohibited
		meta nfproto ipv4 tcp dport %d reject with icmp type net-unreachable
		meta nfproto ipv6 tcp dport %d reject with icmpv6 type no-route
		meta nfproto ipv6 tcp dport %d drop
		meta nfproto ipv6 tcp dport %d reject with tcp reset
		meta nfproto ipv4 tcp dport %d drop
		udp dport %d drop
		tcp dport %d meta length > 200 numgen random mod 4 == 0 drop
	}
	chain output {
		type filter hook output priority 0; policy accept;
	}
}
`, portDropped, portReset, portHostUnreach, portHostUnreach, portProhibited, portProhibited,
	portNetUnreach, portNetUnreach, portV6Dropped, portV6Reset, portV4Dropped, portUDPDropped, portLossy)

// portOwnFirewall is a port the prober's own firewall drops.
const portOwnFirewall = 89

// proberRuleset is the prober's own firewall.
var proberRuleset = fmt.Sprintf(`
table inet netprobe {
	chain output {
		type filter hook output priority 0; policy accept;
		tcp dport %d drop
		udp dport %d drop
	}
}
`, portOwnFirewall, portOwnFirewall)

// slowDelay is how long the slow path holds data each way.
const slowDelay = 200 * time.Millisecond

// Hosts on the LAN that do not exist: nothing answers ARP or neighbor
// discovery for them. Each row has its own, since the kernel remembers a
// failed neighbor for a while and then fails at once.
const (
	goneHost      = 201
	goneHostShort = 202
	goneHostOfTwo = 203
)

// lab is the network the matrix runs in: a prober host running probed, and
// a target host with the servers, the firewall and the DNS server.
type lab struct {
	lan            *netlab.LAN
	prober, target *netlab.Host
	// slow relays to the target's HTTP server through a DelayProxy.
	slow   *netlab.Host
	dns    *dnstest.Server
	client *client.Client
	// sock is probed's Unix socket, reachable from the test's namespace.
	sock string
	// holdClosed receives when a connection to portHold has been closed
	// by the prober.
	holdClosed chan struct{}
	// ca issued the TLS servers' certificates and the client identity
	// "trusted", which portMTLS accepts; probed also holds "stranger",
	// from another CA.
	ca *probetest.CA
}

// largeRequest overflows the socket buffers of both ends (the target's
// receive buffer is kept small), so that its send blocks or fails.
var largeRequest = bytes.Repeat([]byte("x"), 8<<20)

// lossyRequest is enough segments (45) that some are surely lost on the
// lossy link: none is, one time in 400,000.
var lossyRequest = bytes.Repeat([]byte("x"), 64<<10)

func newLab(t *testing.T) *lab {
	t.Helper()
	lan := netlab.NewLAN(t)
	l := &lab{lan: lan, prober: lan.AddHost(t), target: lan.AddHost(t), slow: lan.AddHost(t)}
	l.prober.FastNeighbors(t)
	l.prober.IP(t, "route", "add", "unreachable", "198.18.1.0/24")
	l.prober.IP(t, "route", "add", "prohibit", "198.18.2.0/24")
	l.prober.IP(t, "route", "add", "blackhole", "198.18.3.0/24")
	l.prober.NFT(t, proberRuleset)
	l.target.NFT(t, ruleset)
	// One segment a packet: a veth passes the sender's GSO packets on
	// whole, and the lossy link's rule, a draw a packet, saw as few as one
	// of 64 KiB (the lossy link then lost nothing, one run in CI).
	l.prober.IP(t, "link", "set", "dev", "eth0", "gso_max_segs", "1")
	l.target.Sysctl(t, "net.ipv4.tcp_rmem", "4096 16384 65536")
	// The kernel sends at most one ICMP error a second to a peer by
	// default; rows that run together would wait on each other.
	l.target.Sysctl(t, "net.ipv4.icmp_ratelimit", "0")
	l.target.Sysctl(t, "net.ipv6.icmp.ratelimit", "0")

	l.dns = dnstest.Serve(t, l.target.ListenPacket(t, netip.AddrPortFrom(l.target.V4, 53).String()))
	l.dns.SetAddrs("dual.test", l.target.V4, l.target.V6)
	l.dns.SetAddrs("v6only.test", l.target.V6)
	l.dns.SetAddrs("two.test", lan.Addr4(goneHostOfTwo), l.target.V4)
	l.dns.SetRcode("servfail.test", dns.RcodeServerFailure)
	l.dns.Drop("dropped.test")

	l.serve(t, portHTTP, nil)
	l.slow.DelayProxy(t, netip.AddrPortFrom(l.slow.V4, portHTTP).String(), l.v4(portHTTP), slowDelay)
	for _, p := range []int{portDropped, portReset, portHostUnreach, portProhibited, portNetUnreach, portV6Dropped, portV6Reset, portV4Dropped, portNeverRead} {
		l.serve(t, p, nil)
	}
	l.serve(t, portResetAtOnce, probetest.ResetDuringReverseLookup(l.dns, l.target.V4))
	l.serve(t, portResetAfter, func(c net.Conn) {
		probetest.ReadAll(c)
		probetest.Reset(c)
	})
	l.serve(t, portReadLittle, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 1024))
		c.Close()
	})
	l.serve(t, portStall, func(c net.Conn) {
		c.Write([]byte("partial reply\n"))
		probetest.WaitClosed(c)
	})
	l.serve(t, portHalfClose, func(c net.Conn) {
		c.(*net.TCPConn).CloseWrite()
		probetest.ReadAll(c)
		c.Close()
	})
	l.holdClosed = make(chan struct{}, 64)
	l.serve(t, portHold, func(c net.Conn) {
		probetest.WaitClosed(c)
		select {
		case l.holdClosed <- struct{}{}:
		default:
		}
	})
	l.serve(t, portDrip, drip)
	l.serve(t, portDripCut, drip)
	l.serve(t, portLossy, func(c net.Conn) {
		b, _ := probetest.ReadAll(c)
		fmt.Fprintf(c, "got %d\n", len(b))
		c.Close()
	})
	l.ca = probetest.NewCA(t)
	serverCert := l.ca.Issue(t, tlsName, true)
	l.serve(t, portSMTPNoTLS, func(c net.Conn) { smtp(c, nil) })
	l.serve(t, portSMTPTLS, func(c net.Conn) { smtp(c, &tls.Config{Certificates: []tls.Certificate{serverCert}}) })
	mtls := &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: l.ca.Pool}
	l.serve(t, portMTLS, func(c net.Conn) {
		tc := tls.Server(c, mtls)
		if tc.Handshake() == nil {
			io.WriteString(tc, "hello "+tc.ConnectionState().PeerCertificates[0].Subject.CommonName+"\n")
		}
		tc.Close()
	})
	for _, ip := range []netip.Addr{l.target.V4, l.target.V6} {
		for _, p := range []int{portUDPDropped, portUDPEcho} {
			go echo(l.target.ListenPacket(t, netip.AddrPortFrom(ip, uint16(p)).String()))
		}
	}

	trustedCert, trustedKey := probetest.WriteFiles(t, t.TempDir(), l.ca.Issue(t, "trusted", false))
	strangerCert, strangerKey := probetest.WriteFiles(t, t.TempDir(), probetest.NewCA(t).Issue(t, "stranger", false))
	policy := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(policy, []byte("identity trusted\nidentity stranger\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	l.sock = filepath.Join(t.TempDir(), "probed.sock")
	probetest.StartProbed(t, l.prober.Command(probedBin,
		"--listen=unix:"+l.sock,
		"--dns-server="+l.dns.Addr,
		"--policy-file="+policy,
		"--client-identity=trusted="+trustedCert+","+trustedKey+";stranger="+strangerCert+","+strangerKey,
		fmt.Sprintf("--max-payload-bytes=%d", 2*len(largeRequest))))
	c, err := client.Dial("unix:" + l.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	l.client = c
	return l
}

// serve runs handle (nil: hold the connection) for connections to port on
// both of the target's addresses, or an HTTP server on portHTTP.
func (l *lab) serve(t *testing.T, port int, handle func(net.Conn)) {
	for _, ip := range []netip.Addr{l.target.V4, l.target.V6} {
		ln := l.target.Listen(t, netip.AddrPortFrom(ip, uint16(port)).String())
		if port != portHTTP {
			probetest.NewTarget(t, ln, handle)
			continue
		}
		stop := probetest.ServeHello(ln)
		t.Cleanup(func() {
			if err := stop(); err != nil {
				t.Errorf("web server: %v", err)
			}
		})
	}
}

// drip sends a byte every 100ms until the connection fails.
func drip(c net.Conn) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if _, err := c.Write([]byte(".")); err != nil {
			return
		}
	}
}

// smtp greets, answers EHLO, and answers STARTTLS by refusing it when cfg
// is nil, or else by starting TLS with cfg, answering one EHLO over TLS
// and closing.
func smtp(c net.Conn, cfg *tls.Config) {
	defer c.Close()
	r := bufio.NewReader(c)
	io.WriteString(c, "220 mail.test ESMTP\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		switch {
		case strings.HasPrefix(line, "EHLO "):
			io.WriteString(c, "250-mail.test\r\n250 STARTTLS\r\n")
		case line == "STARTTLS\r\n" && cfg == nil:
			io.WriteString(c, "454 TLS not available\r\n")
		case line == "STARTTLS\r\n":
			io.WriteString(c, "220 go ahead\r\n")
			tc := tls.Server(c, cfg)
			if line, err := bufio.NewReader(tc).ReadString('\n'); err == nil && strings.HasPrefix(line, "EHLO ") {
				io.WriteString(tc, "250 mail.test over TLS\r\n")
			}
			tc.Close()
			return
		default:
			io.WriteString(c, "500 what?\r\n")
		}
	}
}

// echo answers each datagram on pc with the same bytes until pc is closed.
func echo(pc net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}

// v4 and v6 are "ip:port" on the target.
func (l *lab) v4(port int) string { return netip.AddrPortFrom(l.target.V4, uint16(port)).String() }
func (l *lab) v6(port int) string { return netip.AddrPortFrom(l.target.V6, uint16(port)).String() }

// outcome is a stage, reason and errno; the zero outcome is success.
type outcome struct {
	stage  client.Stage
	reason client.Reason
	errno  string
}

func (o outcome) String() string {
	if o.stage == 0 {
		return "success"
	}
	s := fmt.Sprintf("%s / %s", strings.TrimPrefix(o.stage.String(), "STAGE_"), strings.TrimPrefix(o.reason.String(), "REASON_"))
	if o.errno != "" {
		s += " / " + o.errno
	}
	return s
}

// probed is what a row's probe returns: the report of the connect phase,
// the bytes received, a fetch's summary, and the probe's error.
type probed struct {
	connect *client.ConnectResult
	data    []byte
	summary *client.FetchSummary
	err     error
}

// row is one condition of the matrix.
type row struct {
	name string
	// condition and note are the docs' words for the row.
	condition, note string
	// want lists the outcomes the kernel may produce; the first is the
	// usual one.
	want []outcome
	// timeout is the probe's timeout; a TIMEOUT must fire within it and a
	// small slack.
	timeout time.Duration
	// probe runs the probe.
	probe func(t *testing.T, l *lab) probed
	// attempts are the connection attempts the report must list, each as
	// "ADDRESS OUTCOME" with OUTCOME a reason, "connected" or "abandoned";
	// when nil, defaultAttempts.
	attempts func(l *lab) []string
	// check, when set, checks the rest of the result.
	check func(t *testing.T, l *lab, p probed)
}

// Outcomes.
var (
	success = outcome{}
	ok      = []outcome{success}
)

func fail(stage client.Stage, reason client.Reason, errno string) []outcome {
	return []outcome{{stage, reason, errno}}
}

// connect probes with Connect.
func connect(network, addr string, timeout time.Duration) func(t *testing.T, l *lab) probed {
	return func(t *testing.T, l *lab) probed {
		res, err := l.client.Connect(probetest.Context(t), network, addr, client.ConnectOptions{Timeout: timeout})
		return probed{connect: res, err: err}
	}
}

// fetch probes with Fetch and reads the whole reply.
func fetch(network string, addr func(l *lab) string, opts client.FetchOptions) func(t *testing.T, l *lab) probed {
	return func(t *testing.T, l *lab) probed {
		f, err := l.client.Fetch(probetest.Context(t), network, addr(l), opts)
		if err != nil {
			var pe *client.ProbeError
			if errors.As(err, &pe) {
				return probed{connect: pe.Connect, err: err}
			}
			return probed{err: err}
		}
		defer f.Close()
		data, err := io.ReadAll(f)
		return probed{connect: f.Connect, data: data, summary: f.Summary(), err: err}
	}
}

func at(port int, v6 bool) func(l *lab) string {
	return func(l *lab) string {
		if v6 {
			return l.v6(port)
		}
		return l.v4(port)
	}
}

// matrix is the fault matrix. Timeouts are short so that the suite is quick;
// rows run in parallel.
var matrix = []row{
	{
		name:      "syn dropped",
		condition: "a firewall drops the SYN (nft `drop`)",
		want:      fail(client.StageConnect, client.ReasonTimeout, ""),
		timeout:   time.Second,
		probe:     func(t *testing.T, l *lab) probed { return connect("tcp", l.v4(portDropped), time.Second)(t, l) },
		attempts:  func(l *lab) []string { return []string{l.v4(portDropped) + " TIMEOUT"} },
	},
	{
		name:      "tcp reset",
		condition: "a firewall rejects with a TCP reset",
		want:      fail(client.StageConnect, client.ReasonRefused, "ECONNREFUSED"),
		probe:     func(t *testing.T, l *lab) probed { return connect("tcp", l.v4(portReset), 0)(t, l) },
		attempts:  func(l *lab) []string { return []string{l.v4(portReset) + " REFUSED"} },
	},
	{
		name:      "icmp host unreachable",
		condition: "a firewall rejects with ICMP host-unreachable",
		want:      fail(client.StageConnect, client.ReasonHostUnreachable, "EHOSTUNREACH"),
		probe:     func(t *testing.T, l *lab) probed { return connect("tcp", l.v4(portHostUnreach), 0)(t, l) },
		attempts:  func(l *lab) []string { return []string{l.v4(portHostUnreach) + " HOST_UNREACHABLE"} },
	},
	{
		name:      "icmp admin prohibited",
		condition: "a firewall rejects with ICMP admin-prohibited (IPv4)",
		note:      "Linux gives ICMP code 13 the errno of host-unreachable",
		want:      fail(client.StageConnect, client.ReasonHostUnreachable, "EHOSTUNREACH"),
		probe:     func(t *testing.T, l *lab) probed { return connect("tcp", l.v4(portProhibited), 0)(t, l) },
	},
	{
		name:      "icmp net unreachable",
		condition: "a firewall rejects with ICMP net-unreachable",
		want:      fail(client.StageConnect, client.ReasonNetworkUnreachable, "ENETUNREACH"),
		probe:     func(t *testing.T, l *lab) probed { return connect("tcp", l.v4(portNetUnreach), 0)(t, l) },
	},
	{
		name:      "icmpv6 address unreachable",
		condition: "a firewall rejects with ICMPv6 address-unreachable",
		want:      fail(client.StageConnect, client.ReasonHostUnreachable, "EHOSTUNREACH"),
		probe:     func(t *testing.T, l *lab) probed { return connect("tcp", l.v6(portHostUnreach), 0)(t, l) },
	},
	{
		name:      "icmpv6 admin prohibited",
		condition: "a firewall rejects with ICMPv6 admin-prohibited",
		want:      fail(client.StageConnect, client.ReasonProhibited, "EACCES"),
		probe:     func(t *testing.T, l *lab) probed { return connect("tcp", l.v6(portProhibited), 0)(t, l) },
	},
	{
		name:      "icmpv6 no route",
		condition: "a firewall rejects with ICMPv6 no-route",
		want:      fail(client.StageConnect, client.ReasonNetworkUnreachable, "ENETUNREACH"),
		probe:     func(t *testing.T, l *lab) probed { return connect("tcp", l.v6(portNetUnreach), 0)(t, l) },
	},
	{
		name:      "no host",
		condition: "no host at the address: ARP gets no answer",
		want:      fail(client.StageConnect, client.ReasonHostUnreachable, "EHOSTUNREACH"),
		timeout:   3 * time.Second,
		probe: func(t *testing.T, l *lab) probed {
			return connect("tcp", netip.AddrPortFrom(l.lan.Addr4(goneHost), 80).String(), 3*time.Second)(t, l)
		},
		attempts: func(l *lab) []string {
			return []string{netip.AddrPortFrom(l.lan.Addr4(goneHost), 80).String() + " HOST_UNREACHABLE"}
		},
	},
	{
		name:      "no host short timeout",
		condition: "no host at the address, and the probe's timeout ends before ARP gives up",
		want:      fail(client.StageConnect, client.ReasonTimeout, ""),
		timeout:   100 * time.Millisecond,
		probe: func(t *testing.T, l *lab) probed {
			return connect("tcp", netip.AddrPortFrom(l.lan.Addr4(goneHostShort), 80).String(), 100*time.Millisecond)(t, l)
		},
	},
	{
		name:      "no host v6",
		condition: "no host at the IPv6 address: neighbor discovery gets no answer",
		want:      fail(client.StageConnect, client.ReasonHostUnreachable, "EHOSTUNREACH"),
		timeout:   3 * time.Second,
		probe: func(t *testing.T, l *lab) probed {
			return connect("tcp", netip.AddrPortFrom(l.lan.Addr6(goneHost), 80).String(), 3*time.Second)(t, l)
		},
	},
	{
		name:      "no route",
		condition: "no route to the destination",
		want:      fail(client.StageConnect, client.ReasonNetworkUnreachable, "ENETUNREACH"),
		probe:     connect("tcp", "198.19.0.1:80", 0),
	},
	{
		name:      "unreachable route",
		condition: "an unreachable route to the destination",
		want:      fail(client.StageConnect, client.ReasonHostUnreachable, "EHOSTUNREACH"),
		probe:     connect("tcp", "198.18.1.1:80", 0),
	},
	{
		name:      "prohibit route",
		condition: "a prohibit route to the destination",
		want:      fail(client.StageConnect, client.ReasonProhibited, "EACCES"),
		probe:     connect("tcp", "198.18.2.1:80", 0),
	},
	{
		name:      "blackhole route",
		condition: "a blackhole route to the destination",
		want:      fail(client.StageConnect, client.ReasonOther, "EINVAL"),
		probe:     connect("tcp", "198.18.3.1:80", 0),
	},
	{
		name:      "own firewall tcp",
		condition: "the probe server's own firewall drops the SYN",
		note:      "the kernel retries the SYN as if the network lost it",
		want:      fail(client.StageConnect, client.ReasonTimeout, ""),
		timeout:   time.Second,
		probe:     func(t *testing.T, l *lab) probed { return connect("tcp", l.v4(portOwnFirewall), time.Second)(t, l) },
	},
	{
		name:      "own firewall udp",
		condition: "the probe server's own firewall drops a datagram",
		want:      fail(client.StageSend, client.ReasonProhibited, "EPERM"),
		probe:     fetch("udp", at(portOwnFirewall, false), client.FetchOptions{Payload: []byte("ping")}),
	},
	{
		name:      "nxdomain",
		condition: "DNS: the name does not exist (NXDOMAIN)",
		want:      fail(client.StageResolve, client.ReasonNoSuchHost, ""),
		probe:     connect("tcp", "nosuch.test:80", 0),
	},
	{
		name:      "servfail",
		condition: "DNS: the server fails (SERVFAIL)",
		want:      fail(client.StageResolve, client.ReasonTemporaryDNSFailure, ""),
		probe:     connect("tcp", "servfail.test:80", 0),
	},
	{
		name:      "dns dropped",
		condition: "DNS: the server drops the queries",
		want:      fail(client.StageResolve, client.ReasonTimeout, ""),
		timeout:   time.Second,
		probe:     connect("tcp", "dropped.test:80", time.Second),
	},
	{
		name:      "aaaa only, ipv4 forced",
		condition: "DNS: the name has only AAAA records and IPv4 is forced",
		want:      fail(client.StageResolve, client.ReasonNoSuchHost, ""),
		probe:     connect("tcp4", "v6only.test:80", 0),
	},
	{
		name:      "first address dead",
		condition: "DNS: two A records, and the first host is gone",
		note:      "the next address is tried; both attempts are listed",
		want:      ok,
		probe:     connect("tcp", fmt.Sprintf("two.test:%d", portHTTP), 0),
		attempts: func(l *lab) []string {
			return []string{netip.AddrPortFrom(l.lan.Addr4(goneHostOfTwo), portHTTP).String() + " HOST_UNREACHABLE", l.v4(portHTTP) + " connected"}
		},
	},
	{
		name:      "ipv6 dropped",
		condition: "dual stack: IPv6 dropped, IPv4 fine",
		note:      "Happy Eyeballs: IPv4 starts after 300ms and wins; the IPv6 attempt is listed as abandoned",
		want:      ok,
		probe:     connect("tcp", fmt.Sprintf("dual.test:%d", portV6Dropped), 0),
		attempts: func(l *lab) []string {
			return []string{l.v6(portV6Dropped) + " abandoned", l.v4(portV6Dropped) + " connected"}
		},
	},
	{
		name:      "ipv6 refused",
		condition: "dual stack: IPv6 refused, IPv4 fine",
		note:      "IPv4 starts as soon as IPv6 fails",
		want:      ok,
		probe:     connect("tcp", fmt.Sprintf("dual.test:%d", portV6Reset), 0),
		attempts: func(l *lab) []string {
			return []string{l.v6(portV6Reset) + " REFUSED", l.v4(portV6Reset) + " connected"}
		},
	},
	{
		name:      "ipv4 dropped",
		condition: "dual stack: IPv4 dropped, IPv6 fine",
		note:      "IPv6 is tried first (RFC 6724) and connects; IPv4 is never needed",
		want:      ok,
		probe:     connect("tcp", fmt.Sprintf("dual.test:%d", portV4Dropped), 0),
		attempts:  func(l *lab) []string { return []string{l.v6(portV4Dropped) + " connected"} },
	},
	{
		name:      "reset at once",
		condition: "the target resets the connection as soon as it is made",
		want:      fail(client.StageSend, client.ReasonReset, "ECONNRESET"),
		// The reverse lookup holds the probe between connect and send
		// until the reset has come.
		probe: fetch("tcp", at(portResetAtOnce, false), client.FetchOptions{Payload: []byte("hello\n"), ReverseLookup: true}),
	},
	{
		name:      "reset after request",
		condition: "the target reads the request, then resets",
		want:      fail(client.StageReceive, client.ReasonReset, "ECONNRESET"),
		probe:     fetch("tcp", at(portResetAfter, false), client.FetchOptions{Payload: []byte("hello\n")}),
	},
	{
		name:      "closes before reading",
		condition: "the target closes after reading a little of a large request",
		note:      "which one the kernel reports depends on where the write was when the reset came",
		want: []outcome{
			{client.StageSend, client.ReasonReset, "ECONNRESET"},
			{client.StageSend, client.ReasonBrokenPipe, "EPIPE"},
			{client.StageShutdown, client.ReasonReset, "ECONNRESET"},
		},
		probe: fetch("tcp", at(portReadLittle, false), client.FetchOptions{Payload: largeRequest}),
	},
	{
		name:      "never reads",
		condition: "the target never reads a large request",
		want:      fail(client.StageSend, client.ReasonTimeout, ""),
		timeout:   time.Second,
		probe:     fetch("tcp", at(portNeverRead, false), client.FetchOptions{Payload: largeRequest, Timeout: time.Second}),
	},
	{
		name:      "reply then stall",
		condition: "the target sends part of a reply, then stalls",
		note:      "the part that came is delivered before the error",
		want:      fail(client.StageReceive, client.ReasonTimeout, ""),
		timeout:   time.Second,
		probe:     fetch("tcp", at(portStall, false), client.FetchOptions{Payload: []byte("hello\n"), Timeout: time.Second}),
		check: func(t *testing.T, _ *lab, p probed) {
			if string(p.data) != "partial reply\n" {
				t.Errorf("received %q, want the partial reply", p.data)
			}
		},
	},
	{
		name:      "half-close early",
		condition: "the target half-closes before reading: an empty reply",
		note:      "EOF with 0 bytes received (curl's 52)",
		want:      ok,
		probe:     fetch("tcp", at(portHalfClose, false), client.FetchOptions{Payload: []byte("hello\n")}),
		check: func(t *testing.T, _ *lab, p probed) {
			if len(p.data) != 0 {
				t.Errorf("received %q, want nothing", p.data)
			}
		},
	},
	{
		name:      "drip",
		condition: "the target drips its reply slower than the timeout allows",
		want:      fail(client.StageReceive, client.ReasonTimeout, ""),
		timeout:   time.Second,
		probe:     fetch("tcp", at(portDrip, false), client.FetchOptions{Timeout: time.Second, KeepWriteOpen: true}),
		check: func(t *testing.T, _ *lab, p probed) {
			if len(p.data) == 0 || strings.Trim(string(p.data), ".") != "" {
				t.Errorf("received %q, want the drops that came", p.data)
			}
		},
	},
	{
		name:      "firewall mid-transfer",
		condition: "a firewall starts dropping mid-transfer",
		want:      fail(client.StageReceive, client.ReasonTimeout, ""),
		note:      "after read_timeout (here 500ms) without data",
		timeout:   500 * time.Millisecond,
		probe: func(t *testing.T, l *lab) probed {
			f, err := l.client.Fetch(probetest.Context(t), "tcp", l.v4(portDripCut), client.FetchOptions{ReadTimeout: 500 * time.Millisecond, KeepWriteOpen: true})
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			defer f.Close()
			first, err := f.Next()
			if err != nil {
				t.Fatalf("first byte: %v", err)
			}
			l.target.NFT(t, fmt.Sprintf("add rule inet netprobe output tcp sport %d drop", portDripCut))
			rest, err := io.ReadAll(f)
			return probed{connect: f.Connect, data: append(first, rest...), err: err}
		},
	},
	{
		name:      "http",
		condition: "an HTTP server",
		want:      ok,
		probe:     fetch("tcp", at(portHTTP, false), client.FetchOptions{HTTPGet: &client.HTTPGet{Path: "/"}}),
		check: func(t *testing.T, _ *lab, p probed) {
			if !bytes.HasPrefix(p.data, []byte("HTTP/1.0 200 OK\r\n")) || !bytes.HasSuffix(p.data, []byte("\r\n\r\nhello\n")) {
				t.Errorf("received %q, want an HTTP/1.0 200 saying hello", p.data)
			}
		},
	},
	{
		name:      "slow path",
		condition: fmt.Sprintf("a slow path: a proxy holds the data %v each way", slowDelay),
		note:      "the time to first byte shows both delays; the proxy does not delay the handshake",
		want:      ok,
		probe: fetch("tcp", func(l *lab) string { return netip.AddrPortFrom(l.slow.V4, portHTTP).String() },
			client.FetchOptions{HTTPGet: &client.HTTPGet{Path: "/"}}),
		check: func(t *testing.T, _ *lab, p probed) {
			if !bytes.HasSuffix(p.data, []byte("\r\n\r\nhello\n")) {
				t.Errorf("received %q, want the HTTP reply", p.data)
			}
			if ttfb := p.summary.TimeToFirstByte; ttfb < 2*slowDelay {
				t.Errorf("time to first byte %v, want at least %v", ttfb, 2*slowDelay)
			}
		},
	},
	{
		name:      "not tls",
		condition: "TLS to a server that does not speak it (an HTTP server)",
		note:      "the reply's first bytes are not a TLS record",
		want:      fail(client.StageTLSHandshake, client.ReasonNotTLS, ""),
		probe:     fetch("tcp", at(portHTTP, false), client.FetchOptions{TLS: &client.TLSOptions{ServerName: tlsName}}),
	},
	{
		name:      "no match",
		condition: "an expected reply does not come: `expect ^SSH-` of an HTTP server",
		note:      "the server closed; the message quotes the last bytes received",
		want:      fail(client.StageExpect, client.ReasonNoMatch, ""),
		probe: fetch("tcp", at(portHTTP, false), client.FetchOptions{Steps: []client.Step{
			client.Send("GET / HTTP/1.0\r\n\r\n"), client.Expect("^SSH-"),
		}}),
		check: func(t *testing.T, _ *lab, p probed) {
			var pe *client.ProbeError
			if !errors.As(p.err, &pe) || pe.Step != 1 || !strings.Contains(pe.Message, `hello\n`) {
				t.Errorf("step %d, message %q; want step 1 quoting the reply", pe.Step, pe.Message)
			}
		},
	},
	{
		name:      "expect timeout",
		condition: "an expected reply does not come and the server stays silent",
		want:      fail(client.StageExpect, client.ReasonTimeout, ""),
		timeout:   time.Second,
		probe: fetch("tcp", at(portStall, false), client.FetchOptions{Timeout: time.Second, Steps: []client.Step{
			client.Expect("^done"),
		}}),
	},
	{
		name:      "starttls",
		condition: "SMTP with STARTTLS, then EHLO over TLS and `expect ^250 `",
		note:      "the dialogue of `probe fetch --starttls smtp --send 'EHLO netprobe\\r\\n' --expect '^250 '`",
		want:      ok,
		probe:     withCA(portSMTPTLS, smtpStartTLS(tlsName)),
		check: func(t *testing.T, _ *lab, p probed) {
			if p.summary.EndReason != client.EndMatched || p.summary.TLS == nil || !p.summary.TLS.Verified {
				t.Errorf("summary %+v; want a verified TLS handshake and a match", p.summary)
			}
		},
	},
	{
		name:      "starttls refused",
		condition: "SMTP: the server refuses STARTTLS (454) and waits for the next command",
		note:      "at once, by the step's refusal: the step that expected `^220 ` fails, quoting the 454",
		want:      fail(client.StageExpect, client.ReasonNoMatch, ""),
		probe:     withCA(portSMTPNoTLS, smtpStartTLS(tlsName)),
		check: func(t *testing.T, _ *lab, p probed) {
			var pe *client.ProbeError
			if want := `no match for "^220 ": the target refused with "454 TLS not available\r\n"`; !errors.As(p.err, &pe) || pe.Step != 4 || pe.Message != want {
				t.Errorf("%v; want step 4, %q", p.err, want)
			}
		},
	},
	{
		name:      "starttls wrong name",
		condition: "SMTP with STARTTLS: the certificate is for another name",
		want:      fail(client.StageTLSHandshake, client.ReasonHostnameMismatch, ""),
		probe:     withCA(portSMTPTLS, smtpStartTLS("mail.test")),
	},
	{
		name:      "client certificate",
		condition: "a server that requires a client certificate, given one it trusts (`client_identity`)",
		want:      ok,
		probe:     withCA(portMTLS, mtlsOptions("trusted")),
		check: func(t *testing.T, _ *lab, p probed) {
			if string(p.data) != "hello trusted\n" {
				t.Errorf("received %q, want the server's greeting", p.data)
			}
		},
	},
	{
		name:      "no client certificate",
		condition: "a server that requires a client certificate, given none",
		note:      "TLS 1.3 refuses after the client's part of the handshake; the probe waits for the refusal",
		want:      fail(client.StageTLSHandshake, client.ReasonHandshakeFailure, ""),
		probe:     withCA(portMTLS, mtlsOptions("")),
	},
	{
		name:      "client certificate refused",
		condition: "a server that requires a client certificate, given one from a CA it does not trust",
		want:      fail(client.StageTLSHandshake, client.ReasonHandshakeFailure, ""),
		probe:     withCA(portMTLS, mtlsOptions("stranger")),
	},
	{
		name:      "lossy link",
		condition: "a lossy link: a firewall drops one in four data segments (nft `numgen random`)",
		note:      "TCP recovers; the report's tcp_info counts the retransmissions",
		want:      ok,
		probe:     fetch("tcp", at(portLossy, false), client.FetchOptions{Payload: lossyRequest, Timeout: 30 * time.Second}),
		check: func(t *testing.T, _ *lab, p probed) {
			if want := fmt.Sprintf("got %d\n", len(lossyRequest)); string(p.data) != want {
				t.Errorf("received %q, want %q", p.data, want)
			}
			if ti := p.summary.TCPInfo; ti == nil || ti.TotalRetransmits == 0 || ti.RTT <= 0 {
				t.Errorf("tcp_info %+v; want retransmissions counted", ti)
			}
		},
	},
	{
		name:      "udp closed",
		condition: "UDP: nothing listens (ICMP port unreachable)",
		want:      fail(client.StageReceive, client.ReasonRefused, "ECONNREFUSED"),
		probe:     fetch("udp", at(portUDPClosed, false), client.FetchOptions{Payload: []byte("ping")}),
	},
	{
		name:      "udp dropped",
		condition: "UDP: a firewall drops the datagram",
		want:      fail(client.StageReceive, client.ReasonTimeout, ""),
		timeout:   time.Second,
		probe:     fetch("udp", at(portUDPDropped, false), client.FetchOptions{Payload: []byte("ping"), Timeout: time.Second}),
	},
	{
		name:      "udp echo",
		condition: "UDP: an echo server",
		note:      "ends cleanly when the echo falls silent for the read timeout",
		want:      ok,
		probe:     fetch("udp6", at(portUDPEcho, true), client.FetchOptions{Payload: []byte("ping"), ReadTimeout: 200 * time.Millisecond}),
		check: func(t *testing.T, _ *lab, p probed) {
			if string(p.data) != "ping" {
				t.Errorf("received %q, want the echo", p.data)
			}
		},
	},
	{
		name:      "out of file descriptors",
		condition: "the probe server is out of file descriptors (probed under a low RLIMIT_NOFILE)",
		note:      "no packet is sent; probes work again once descriptors are free",
		want:      fail(client.StageSocket, client.ReasonTooManyOpenFiles, "EMFILE"),
		probe:     exhaustDescriptors,
	},
}

// smtpStartTLS is `--starttls smtp --send 'EHLO netprobe\r\n' --expect
// '^250 '`, verifying the certificate for serverName.
func smtpStartTLS(serverName string) client.FetchOptions {
	d, _ := starttls.Lookup("smtp")
	var steps []client.Step
	for _, st := range d.Steps {
		steps = append(steps, client.Step{Send: st.GetSend(), Expect: st.GetExpect(), Refusal: st.GetRefusal(), StartTLS: st.GetStartTls()})
	}
	return client.FetchOptions{
		TLS:   &client.TLSOptions{ServerName: serverName},
		Steps: append(steps, client.Send("EHLO netprobe\r\n"), client.Expect("^250 ")),
	}
}

// withCA fetches from port on the target's IPv4 address with opts,
// trusting the lab's CA.
func withCA(port int, opts client.FetchOptions) func(t *testing.T, l *lab) probed {
	return func(t *testing.T, l *lab) probed {
		tlsOpts := *opts.TLS
		tlsOpts.CABundle = l.ca.PEM
		opts.TLS = &tlsOpts
		return fetch("tcp", at(port, false), opts)(t, l)
	}
}

// mtlsOptions fetches from portMTLS presenting identity.
func mtlsOptions(identity string) client.FetchOptions {
	return client.FetchOptions{TLS: &client.TLSOptions{ServerName: tlsName, ClientIdentity: identity}}
}

// exhaustDescriptors runs a probed with few file descriptors, holds
// connections open through it until a probe fails, then frees them and
// checks that probes work again.
func exhaustDescriptors(t *testing.T, l *lab) probed {
	sock := filepath.Join(t.TempDir(), "low.sock")
	probetest.StartProbed(t, l.prober.Command("prlimit", "--nofile=32", "--", probedBin, "--listen=unix:"+sock))
	c, err := client.Dial("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := probetest.Context(t)
	var (
		held   []*client.Fetch
		failed probed
	)
	for range 32 {
		f, err := c.Fetch(ctx, "tcp", l.v4(portHold), client.FetchOptions{KeepWriteOpen: true, Timeout: probetest.Timeout})
		if err != nil {
			failed.err = err
			var pe *client.ProbeError
			if errors.As(err, &pe) {
				failed.connect = pe.Connect
			}
			break
		}
		held = append(held, f)
	}
	for _, f := range held {
		f.Close()
	}
	for range held {
		select {
		case <-l.holdClosed:
		case <-ctx.Done():
			t.Fatal("the held connections were not closed")
		}
	}
	if _, err := c.Connect(ctx, "tcp", l.v4(portHTTP), client.ConnectOptions{}); err != nil {
		t.Errorf("once the descriptors were free: %v", err)
	}
	return failed
}

// slack is how late past its timeout a TIMEOUT may fire.
const slack = 500 * time.Millisecond

func TestFaultMatrix(t *testing.T) {
	l := newLab(t)
	for _, r := range matrix {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			p := r.probe(t, l)
			got := success
			var pe *client.ProbeError
			switch {
			case errors.As(p.err, &pe):
				got = outcome{pe.Stage, pe.Reason, pe.Errno}
			case p.err != nil:
				t.Fatalf("the call failed: %v", p.err)
			}
			if !contains(r.want, got) {
				t.Errorf("got %v (%v), want %v", got, p.err, r.want)
			}
			if pe != nil && got.reason == client.ReasonTimeout && r.timeout > 0 && (pe.Elapsed < r.timeout || pe.Elapsed > r.timeout+slack) {
				t.Errorf("timed out after %v, want %v to %v", pe.Elapsed, r.timeout, r.timeout+slack)
			}
			if p.connect == nil {
				t.Fatal("no connect report")
			}
			want := defaultAttempts(p.connect, pe)
			if r.attempts != nil {
				want = r.attempts(l)
			}
			if got := attemptList(p.connect); strings.Join(got, ", ") != strings.Join(want, ", ") {
				t.Errorf("attempts %q, want %q", got, want)
			}
			if r.check != nil {
				r.check(t, l, p)
			}
		})
	}
}

func contains(list []outcome, o outcome) bool {
	for _, w := range list {
		if w == o {
			return true
		}
	}
	return false
}

// defaultAttempts is the attempt list of a probe of one address: none when
// it failed before connecting, the failure when connecting failed, and the
// connection otherwise.
func defaultAttempts(r *client.ConnectResult, pe *client.ProbeError) []string {
	switch {
	case pe != nil && pe.Stage < client.StageSocket:
		return nil
	case pe != nil && pe.Stage <= client.StageConnect:
		return []string{pe.Address + " " + strings.TrimPrefix(pe.Reason.String(), "REASON_")}
	}
	return []string{r.RemoteAddr.String() + " connected"}
}

// attemptList renders the attempts as "ADDRESS OUTCOME".
func attemptList(r *client.ConnectResult) []string {
	var out []string
	for _, a := range r.Attempts {
		switch {
		case a.Err != nil:
			out = append(out, a.Addr.String()+" "+strings.TrimPrefix(a.Err.Reason.String(), "REASON_"))
		case a.Abandoned:
			out = append(out, a.Addr.String()+" abandoned")
		default:
			out = append(out, a.Addr.String()+" connected")
		}
	}
	return out
}
