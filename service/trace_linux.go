package service

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// A trace's pace, as the API documents it.
const (
	// hopWait is how long a probe waits for its answer before it counts
	// as lost.
	hopWait = time.Second
	// maxSilentHops is how many TTLs in a row without any answer end a
	// trace: past them, nothing is likely to answer (a drop), and the
	// rest of the budget would be spent waiting.
	maxSilentHops = 5
)

// answer is what came back for one probe.
type answer struct {
	kind netprobev1.HopAnswer
	from netip.Addr
	// icmpType and icmpCode are the ICMP answer's.
	icmpType, icmpCode uint8
	// errno is what the kernel made of the answer, for an unreachable or
	// a reset.
	errno syscall.Errno
	rtt   time.Duration
}

// run traces the path: a TCP SYN (for UDP, a datagram of two bytes) with each
// TTL in turn, from one local port. Without privilege, the kernel tells
// what answered a probe on the socket's error queue (IP_RECVERR), with the
// ICMP type and code and the address of the router that sent it.
func (tr *tracer) run(ctx context.Context) *netprobev1.Path {
	path := &netprobev1.Path{}
	fl := &flow{}
	silent := 0
	for ttl := 1; ttl <= tr.maxHops; ttl++ {
		hop := &netprobev1.Hop{Ttl: uint32(ttl), Answer: netprobev1.HopAnswer_HOP_ANSWER_NONE}
		for range tr.perHop {
			if ctx.Err() != nil {
				break
			}
			a, pe := tr.probe(ctx, fl, ttl)
			if pe != nil {
				path.End, path.Error = netprobev1.PathEnd_PATH_END_ERROR, pe
				break
			}
			if a.kind == netprobev1.HopAnswer_HOP_ANSWER_NONE && ctx.Err() != nil {
				// Cut short by the trace's end, not lost.
				break
			}
			hop.Sent++
			if a.kind != netprobev1.HopAnswer_HOP_ANSWER_NONE {
				tr.record(hop, a)
			}
		}
		if hop.Sent > 0 {
			path.Hops = append(path.Hops, hop)
		}
		switch {
		case path.End != netprobev1.PathEnd_PATH_END_UNSPECIFIED:
		case reached(hop.Answer):
			path.End, path.Reached = netprobev1.PathEnd_PATH_END_REACHED, true
		case hop.Answer == netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE:
			path.End = netprobev1.PathEnd_PATH_END_UNREACHABLE
		case ctx.Err() != nil:
			path.End = traceCut(ctx)
		case hop.Answer == netprobev1.HopAnswer_HOP_ANSWER_NONE:
			if silent++; silent == maxSilentHops {
				path.End = netprobev1.PathEnd_PATH_END_SILENCE
			}
		default:
			silent = 0
		}
		if path.End != netprobev1.PathEnd_PATH_END_UNSPECIFIED {
			break
		}
	}
	if path.End == netprobev1.PathEnd_PATH_END_UNSPECIFIED {
		path.End = netprobev1.PathEnd_PATH_END_MAX_HOPS
	}
	if fl.source.IsValid() {
		path.Source = fl.source.String()
	}
	path.FlowHeld = !fl.moved
	return path
}

// reached reports whether an answer is the target's own.
func reached(a netprobev1.HopAnswer) bool {
	switch a {
	case netprobev1.HopAnswer_HOP_ANSWER_SYN_ACK, netprobev1.HopAnswer_HOP_ANSWER_RST,
		netprobev1.HopAnswer_HOP_ANSWER_PORT_UNREACHABLE, netprobev1.HopAnswer_HOP_ANSWER_DATAGRAM:
		return true
	}
	return false
}

// record adds an answer to its hop: the first one names the hop.
func (tr *tracer) record(hop *netprobev1.Hop, a answer) {
	hop.Answered++
	hop.Rtts = append(hop.Rtts, durationpb.New(a.rtt))
	if hop.Answer != netprobev1.HopAnswer_HOP_ANSWER_NONE {
		return
	}
	hop.Answer = a.kind
	if a.from.IsValid() { // an ICMP error may not name its sender
		hop.Address = a.from.String()
	}
	hop.IcmpType, hop.IcmpCode = uint32(a.icmpType), uint32(a.icmpCode)
	if a.errno != 0 {
		hop.Reason, hop.Errno = classify(a.errno)
	}
}

// traceCut is how a trace whose context ended stopped.
func traceCut(ctx context.Context) netprobev1.PathEnd {
	if errors.Is(context.Cause(ctx), ErrShutdown) {
		return netprobev1.PathEnd_PATH_END_SERVER_SHUTDOWN
	}
	return netprobev1.PathEnd_PATH_END_TIMEOUT
}

// flow is the 5-tuple a trace holds: its local end, once the first probe
// has one, and whether a probe went from another.
type flow struct {
	source netip.AddrPort
	moved  bool
	// sent counts the probes sent, for a UDP probe's data.
	sent uint16
	// elsewhere makes a probe leave from a port of the kernel's choosing,
	// not the flow's.
	elsewhere bool
}

// went records the local end a probe went out from.
func (fl *flow) went(local netip.AddrPort) {
	switch {
	case !fl.source.IsValid():
		fl.source = local
	case local != fl.source:
		fl.moved = true
	}
}

// probe sends one SYN (for UDP, one datagram of its tag) with ttl and waits up
// to hopWait for what answers it. The answer is of kind NONE when nothing
// did (or ctx ended first); a ProbeError is a local failure, which ends
// the trace.
func (tr *tracer) probe(ctx context.Context, fl *flow, ttl int) (answer, *netprobev1.ProbeError) {
	family := unix.AF_INET6
	if tr.dst.Addr().Is4() {
		family = unix.AF_INET
	}
	sotype, proto := unix.SOCK_STREAM, unix.IPPROTO_TCP
	if tr.udp {
		sotype, proto = unix.SOCK_DGRAM, unix.IPPROTO_UDP
	}
	fd, err := unix.Socket(family, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return answer{}, tr.fail(netprobev1.Stage_STAGE_SOCKET, os.NewSyscallError("socket", err))
	}
	// The file owns the socket from here, and waits on it in the runtime's
	// poller: a probe waiting for its answer holds no thread.
	f := os.NewFile(uintptr(fd), "trace")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return answer{}, tr.fail(netprobev1.Stage_STAGE_SOCKET, err)
	}
	var (
		sent       time.Time
		setupErr   error
		connectErr error
		sendErr    error
		// tag is a UDP probe's data: its number in the trace. Every probe
		// goes out on the same flow, so an ICMP error that comes late,
		// after its probe's wait, reaches the next probe's socket; the
		// error quotes the data (when the router quotes more than the UDP
		// header, as RFC 1812 asks and Linux does), which tells it apart.
		tag []byte
	)
	if tr.udp {
		tag = []byte{byte(fl.sent >> 8), byte(fl.sent)}
		fl.sent++
	}
	if err := rc.Control(func(s uintptr) {
		if setupErr = tr.setup(int(s), fl, ttl); setupErr != nil {
			return
		}
		sent = time.Now()
		connectErr = unix.Connect(int(s), sockaddr(tr.dst))
		// The flow is what the socket went out from, as the kernel says,
		// not what it was asked for.
		if sa, err := unix.Getsockname(int(s)); err == nil {
			fl.went(addrPort(sa))
		}
		if tr.udp && connectErr == nil {
			// A UDP connect sends nothing: the probe is a datagram of its
			// tag, whose ICMP errors come back to the connected socket.
			sent = time.Now()
			sendErr = unix.Sendto(int(s), tag, 0, nil)
		}
	}); err != nil {
		return answer{}, tr.fail(netprobev1.Stage_STAGE_SOCKET, err)
	}
	if setupErr != nil {
		return answer{}, tr.fail(netprobev1.Stage_STAGE_SOCKET, setupErr)
	}
	if errors.Is(connectErr, unix.EADDRNOTAVAIL) && fl.source.Port() != 0 && !fl.elsewhere {
		// Another socket has taken the flow's addresses and ports since
		// the last probe (another trace to this address, given the port
		// between two probes): this one leaves from another port, and the
		// flow is not held, rather than the trace end.
		fl.elsewhere = true
		defer func() { fl.elsewhere = false }()
		return tr.probe(ctx, fl, ttl)
	}
	switch {
	case tr.udp && connectErr != nil:
		return answer{}, tr.fail(netprobev1.Stage_STAGE_CONNECT, os.NewSyscallError("connect", connectErr))
	case tr.udp && sendErr != nil:
		return answer{}, tr.fail(netprobev1.Stage_STAGE_SEND, os.NewSyscallError("sendto", sendErr))
	case tr.udp:
	case connectErr == nil:
		// Connected at once: the SYN-ACK came back within connect(2).
		return answer{kind: netprobev1.HopAnswer_HOP_ANSWER_SYN_ACK, from: tr.dst.Addr(), rtt: time.Since(sent)}, nil
	case !errors.Is(connectErr, unix.EINPROGRESS):
		return answer{}, tr.fail(netprobev1.Stage_STAGE_CONNECT, os.NewSyscallError("connect", connectErr))
	}

	wctx, cancel := context.WithTimeout(ctx, hopWait)
	defer cancel()
	// The wait ends with wctx: a deadline in the past wakes it at once.
	stop := context.AfterFunc(wctx, func() { f.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var (
		a        answer
		done     bool
		localErr error
	)
	// A SYN's answer makes its socket writable (connected, or failed); a
	// datagram's, readable (a reply, or an error queued).
	wait, inspect, stage := rc.Write, tr.inspect, netprobev1.Stage_STAGE_CONNECT
	if tr.udp {
		wait, stage = rc.Read, netprobev1.Stage_STAGE_RECEIVE
		inspect = func(s int) (answer, bool, error) { return tr.inspectUDP(s, tag) }
	}
	err = wait(func(s uintptr) bool {
		a, done, localErr = inspect(int(s))
		return done
	})
	switch {
	case localErr != nil:
		return answer{}, tr.fail(stage, localErr)
	case err != nil || !done:
		return answer{kind: netprobev1.HopAnswer_HOP_ANSWER_NONE}, nil
	}
	a.rtt = time.Since(sent)
	return a, nil
}

// setup sets the socket's options and binds it to the flow's local port,
// or to a port of the kernel's choosing for the first probe (and a probe
// that cannot have the flow's).
func (tr *tracer) setup(s int, fl *flow, ttl int) error {
	type opt struct {
		level, name, value int
		what               string
	}
	opts := []opt{
		// Every probe binds the same port, while the one before may not be
		// quite gone.
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"},
		{unix.IPPROTO_IP, unix.IP_RECVERR, 1, "IP_RECVERR"},
		{unix.IPPROTO_IP, unix.IP_TTL, ttl, "IP_TTL"},
	}
	if tr.dst.Addr().Is6() {
		opts = []opt{
			opts[0],
			{unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1, "IPV6_RECVERR"},
			{unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl, "IPV6_UNICAST_HOPS"},
			// The kernel would give each socket a flow label of its own,
			// which routers may balance by: every probe has label 0.
			{unix.IPPROTO_IPV6, unix.IPV6_AUTOFLOWLABEL, 0, "IPV6_AUTOFLOWLABEL"},
		}
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(s, o.level, o.name, o.value); err != nil {
			return os.NewSyscallError("setsockopt "+o.what, err)
		}
	}
	// Closing a connected probe resets it: no TIME_WAIT holds the 4-tuple
	// that the next probe of the hop reuses. (UDP has none.)
	if !tr.udp {
		if err := unix.SetsockoptLinger(s, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1}); err != nil {
			return os.NewSyscallError("setsockopt SO_LINGER", err)
		}
	}
	src := tr.src
	if !src.IsValid() {
		src = netip.IPv6Unspecified()
		if tr.dst.Addr().Is4() {
			src = netip.IPv4Unspecified()
		}
	}
	if port := fl.source.Port(); port != 0 && !fl.elsewhere {
		err := unix.Bind(s, sockaddr(netip.AddrPortFrom(src, port)))
		if !errors.Is(err, unix.EADDRINUSE) {
			return os.NewSyscallError("bind", err) // nil once bound
		}
		// Another socket took the port between two probes: this one goes
		// from another (the flow is then not held), rather than not at all.
	}
	return os.NewSyscallError("bind", unix.Bind(s, sockaddr(netip.AddrPortFrom(src, 0))))
}

// inspect looks at a probe's socket: an ICMP error on its error queue, a
// refused connect (the target's RST), a connection (its SYN-ACK), or
// nothing yet (done false). An error is a local one, with no ICMP behind
// it.
func (tr *tracer) inspect(s int) (a answer, done bool, err error) {
	if a, ok := readErrQueue(s, nil); ok {
		return a, true, nil
	}
	soErr, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return answer{}, true, os.NewSyscallError("getsockopt SO_ERROR", err)
	}
	switch errno := syscall.Errno(soErr); errno {
	case 0:
		if _, err := unix.Getpeername(s); err != nil {
			return answer{}, false, nil
		}
		return answer{kind: netprobev1.HopAnswer_HOP_ANSWER_SYN_ACK, from: tr.dst.Addr()}, true, nil
	case unix.ECONNREFUSED:
		return answer{kind: netprobev1.HopAnswer_HOP_ANSWER_RST, from: tr.dst.Addr(), errno: errno}, true, nil
	default:
		// The kernel queues an ICMP error before it sets the socket's
		// error: one may have come in since the queue was read.
		if a, ok := readErrQueue(s, nil); ok {
			return a, true, nil
		}
		return answer{}, true, os.NewSyscallError("connect", errno)
	}
}

// inspectUDP looks at a UDP probe's socket: an ICMP error on its error
// queue that answers the probe of tag, a datagram from the target, or
// nothing yet (done false). An error is a local one, with no ICMP behind
// it.
func (tr *tracer) inspectUDP(s int, tag []byte) (a answer, done bool, err error) {
	if a, ok := readErrQueue(s, tag); ok {
		return tr.portUnreachable(a), true, nil
	}
	var b [1]byte
	_, _, err = unix.Recvfrom(s, b[:], unix.MSG_DONTWAIT)
	switch {
	case err == nil:
		// The socket is connected: what comes in is the target's.
		return answer{kind: netprobev1.HopAnswer_HOP_ANSWER_DATAGRAM, from: tr.dst.Addr()}, true, nil
	case errors.Is(err, unix.EAGAIN):
		return answer{}, false, nil
	}
	// The kernel queues an ICMP error before it sets the socket's error,
	// which recvfrom returns: one may have come in since the queue was
	// read.
	if a, ok := readErrQueue(s, tag); ok {
		return tr.portUnreachable(a), true, nil
	}
	return answer{}, true, os.NewSyscallError("recvfrom", err)
}

// portUnreachable makes an ICMP port unreachable (type 3 code 3, ICMPv6
// type 1 code 4) from the target's own address what traceroute -U takes
// it for: the target, reached, with nothing on the port. From any other
// address (a router's filter) it stays an unreachable.
func (tr *tracer) portUnreachable(a answer) answer {
	v4 := tr.dst.Addr().Is4() && a.icmpType == 3 && a.icmpCode == 3
	v6 := tr.dst.Addr().Is6() && a.icmpType == 1 && a.icmpCode == 4
	if a.kind == netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE && (v4 || v6) && a.from == tr.dst.Addr() {
		a.kind = netprobev1.HopAnswer_HOP_ANSWER_PORT_UNREACHABLE
	}
	return a
}

// readErrQueue takes an ICMP error off the socket's error queue, as an
// answer; ok is false when there is none. With tag, a UDP probe's data,
// an error that quotes other data answers an earlier probe, come late: it
// is dropped. One that quotes none (the router quoted the UDP header
// only) cannot be told apart, and is taken.
func readErrQueue(s int, tag []byte) (a answer, ok bool) {
	quoted := make([]byte, len(tag))
	var e icmpError
	for {
		var n int
		if e, n, ok = recvICMPError(s, quoted); !ok {
			return answer{}, false
		}
		if n < len(tag) || bytes.Equal(quoted, tag) {
			break
		}
	}
	a = answer{
		kind:     netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE,
		from:     e.from,
		icmpType: e.icmpType,
		icmpCode: e.icmpCode,
		errno:    e.errno,
	}
	// Any ICMP error but time exceeded ends the connection as an
	// unreachable does: type 3 (ICMPv6's 1), or rarer ones, such as a
	// parameter problem, that icmp_type names.
	if e.timeExceeded() {
		a.kind, a.errno = netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED, 0
	}
	return a, true
}

// icmpError is an ICMP error the kernel queued on a socket with
// IP_RECVERR (IPV6_RECVERR): from sock_extended_err, its type and code,
// the errno the kernel made of it, and the address of its sender
// (SO_EE_OFFENDER).
type icmpError struct {
	v6                 bool
	from               netip.Addr
	icmpType, icmpCode uint8
	errno              syscall.Errno
}

// timeExceeded reports whether e is ICMP time exceeded: type 11, ICMPv6's
// type 3.
func (e icmpError) timeExceeded() bool {
	return !e.v6 && e.icmpType == 11 || e.v6 && e.icmpType == 3
}

// recvICMPError takes the next error off the socket's error queue, without
// waiting, into data the start of the packet it answers (the payload of
// the packet sent, from its transport header on), n bytes of it. ok is
// false when the queue is empty; an error that no ICMP message brought
// (a local one) is taken and passed over.
func recvICMPError(s int, data []byte) (e icmpError, n int, ok bool) {
	var oob [128]byte
	for {
		n, oobn, _, _, err := unix.Recvmsg(s, data, oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err != nil {
			return icmpError{}, 0, false
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			v4 := m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR
			v6 := m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_RECVERR
			if !v4 && !v6 || len(m.Data) < sizeofSockExtendedErr {
				continue
			}
			ee := (*unix.SockExtendedErr)(unsafe.Pointer(&m.Data[0]))
			if ee.Origin != unix.SO_EE_ORIGIN_ICMP && ee.Origin != unix.SO_EE_ORIGIN_ICMP6 {
				continue
			}
			return icmpError{
				v6:       ee.Origin == unix.SO_EE_ORIGIN_ICMP6,
				from:     offender(m.Data[sizeofSockExtendedErr:]),
				icmpType: ee.Type,
				icmpCode: ee.Code,
				errno:    syscall.Errno(ee.Errno),
			}, n, true
		}
	}
}

// sizeofSockExtendedErr is the size of a struct sock_extended_err, which
// x/sys/unix does not name.
const sizeofSockExtendedErr = int(unsafe.Sizeof(unix.SockExtendedErr{}))

// offender reads the sockaddr that follows a sock_extended_err: the
// address of the ICMP error's sender, or none (AF_UNSPEC).
func offender(b []byte) netip.Addr {
	if len(b) < 2 {
		return netip.Addr{}
	}
	switch binary.NativeEndian.Uint16(b) {
	case unix.AF_INET:
		if len(b) >= unix.SizeofSockaddrInet4 {
			return netip.AddrFrom4([4]byte(b[4:8]))
		}
	case unix.AF_INET6:
		if len(b) >= unix.SizeofSockaddrInet6 {
			return netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		}
	}
	return netip.Addr{}
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// fail is the ProbeError of a local failure that ends the trace; its
// elapsed is from the trace's start.
func (tr *tracer) fail(stage netprobev1.Stage, err error) *netprobev1.ProbeError {
	return probeError(stage, tr.dst.String(), err, time.Since(tr.start))
}
