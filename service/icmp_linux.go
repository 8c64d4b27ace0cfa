package service

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// The raw sockets' filters of ICMP types, which x/sys/unix does not name:
// ICMP_FILTER (linux/icmp.h) and ICMPV6_FILTER (linux/icmpv6.h).
const (
	icmpFilter   = 1
	icmpv6Filter = 1
)

// maxBadReads is how many failed reads in a row, other than the errors
// ICMP sets (icmpErrno), end a wait for the reply: only a failure that
// goes on is a local one.
const maxBadReads = 16

// icmpErrno says whether err is what an ICMP error the socket was told of
// sets as its error (SO_ERROR, which a read takes), whose details the
// error queue holds: the errnos Linux gives ICMP's unreachables, time
// exceeded, parameter problems and too big (icmp_err_convert, icmpv6_err_convert).
func icmpErrno(err error) bool {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case unix.ENETUNREACH, unix.EHOSTUNREACH, unix.ENOPROTOOPT, unix.ECONNREFUSED, unix.EACCES, unix.EPROTO, unix.EMSGSIZE, unix.EOPNOTSUPP, unix.EHOSTDOWN, unix.ENONET:
		return true
	}
	return false
}

// run sends the echo and waits for its reply, an ICMP error in answer to
// it, or the end of ctx.
func (e *echo) run(ctx context.Context) echoReport {
	rep := echoReport{result: &netprobev1.IcmpResult{PayloadBytes: uint32(e.payload)}}
	setup := time.Now()
	fd, raw, err := openEcho(e.dst.Is4())
	if err != nil {
		rep.err = e.fail(netprobev1.Stage_STAGE_SOCKET, err)
		return rep
	}
	// The file owns the socket from here, and waits on it in the runtime's
	// poller: an echo waiting for its reply holds no thread.
	f := os.NewFile(uintptr(fd), "icmp")
	defer f.Close()
	rep.result.Socket = netprobev1.IcmpSocket_ICMP_SOCKET_DATAGRAM
	if raw {
		rep.result.Socket = netprobev1.IcmpSocket_ICMP_SOCKET_RAW
	}
	rc, err := f.SyscallConn()
	if err != nil {
		rep.err = e.fail(netprobev1.Stage_STAGE_SOCKET, err)
		return rep
	}
	w := &echoWait{v6: e.dst.Is6(), raw: raw, dst: e.dst, payload: make([]byte, e.payload)}
	// Random: a reply counts only when it carries them back, which one
	// made up by anyone but the target is unlikely to.
	var idSeq [4]byte
	rand.Read(idSeq[:])
	rand.Read(w.payload)
	w.id, w.seq = binary.BigEndian.Uint16(idSeq[:2]), binary.BigEndian.Uint16(idSeq[2:])

	var setupErr, connectErr error
	if err := rc.Control(func(s uintptr) {
		if setupErr = e.setup(int(s), raw); setupErr == nil {
			// connect(2) chooses the route: a local "no route" is the
			// send's failure.
			connectErr = os.NewSyscallError("connect", unix.Connect(int(s), sockaddr(netip.AddrPortFrom(e.dst, 0))))
		}
		if connectErr == nil {
			// Connected, the socket is bound: to its source address,
			// and a datagram socket to its identifier.
			rep.local, w.id = e.bound(int(s), w)
		}
	}); err != nil {
		setupErr = err
	}
	switch {
	case setupErr != nil:
		rep.err = e.fail(netprobev1.Stage_STAGE_SOCKET, setupErr)
		return rep
	case connectErr != nil:
		rep.err = e.fail(netprobev1.Stage_STAGE_SEND, connectErr)
		return rep
	}
	rep.result.Id, rep.result.Sequence = uint32(w.id), uint32(w.seq)

	// ctx ends the waits: a deadline in the past wakes them at once.
	stop := context.AfterFunc(ctx, func() { f.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var echoType icmp.Type = ipv4.ICMPTypeEcho
	if w.v6 {
		echoType = ipv6.ICMPTypeEchoRequest
	}
	// A datagram socket puts its own identifier in place of this one, and
	// the checksums are the kernel's but for a raw IPv4 socket's, which
	// Marshal makes.
	msg, err := (&icmp.Message{Type: echoType, Body: &icmp.Echo{ID: int(w.id), Seq: int(w.seq), Data: w.payload}}).Marshal(nil)
	if err != nil {
		rep.err = e.fail(netprobev1.Stage_STAGE_SEND, err)
		return rep
	}
	if ctx.Err() != nil {
		// The probe's time is over before the echo went out, as a dial's
		// can be before its SYN: nothing is sent (the deadline set above
		// may not be in place yet).
		rep.err = e.fail(netprobev1.Stage_STAGE_ECHO, context.Cause(ctx))
		return rep
	}
	var (
		sent    time.Time
		sendErr error
	)
	err = rc.Write(func(s uintptr) bool {
		sent = time.Now()
		_, sendErr = unix.Write(int(s), msg)
		return sendErr != unix.EAGAIN
	})
	switch {
	case err != nil:
		rep.err = e.fail(netprobev1.Stage_STAGE_SEND, err)
		return rep
	case sendErr != nil:
		rep.err = e.fail(netprobev1.Stage_STAGE_SEND, os.NewSyscallError("send", sendErr))
		return rep
	}
	rep.result.SetupDuration = durationpb.New(sent.Sub(setup))

	// Room for a raw IPv4 socket's IP header, at its longest, and a byte
	// more than the reply: a longer one is not the reply.
	w.buf = make([]byte, 60+8+e.payload+1)
	err = rc.Read(func(s uintptr) bool { return w.receive(int(s)) })
	switch {
	case w.localErr != nil:
		rep.err = e.fail(netprobev1.Stage_STAGE_ECHO, w.localErr)
	case w.icmpErr != nil:
		rep.err = e.unreachable(*w.icmpErr)
	case !w.replied:
		// The wait ended with ctx: the probe's time ran out.
		rep.err = e.fail(netprobev1.Stage_STAGE_ECHO, err)
	default:
		rep.result.Rtt = durationpb.New(w.at.Sub(sent))
		rep.result.ReplyAddress = w.from.String()
		rep.result.ReplyTtl = uint32(w.ttl)
	}
	return rep
}

// unreachable is the ProbeError of an ICMP error that answered the echo:
// its errno says the reason, as for a connection, and its type, code and
// sender go with it.
func (e *echo) unreachable(ie icmpError) *netprobev1.ProbeError {
	from := "an unnamed sender"
	if ie.from.IsValid() {
		from = ie.from.String()
	}
	what := "ICMP"
	if ie.v6 {
		what = "ICMPv6"
	}
	var cause error = ie.errno
	if ie.timeExceeded() {
		cause = errTTLExceeded
	}
	err := fmt.Errorf("echo to %s: %s type %d code %d from %s: %w", e.dst, what, ie.icmpType, ie.icmpCode, from, cause)
	pe := e.fail(netprobev1.Stage_STAGE_ECHO, err)
	pe.Icmp = &netprobev1.IcmpError{IcmpType: uint32(ie.icmpType), IcmpCode: uint32(ie.icmpCode)}
	if ie.from.IsValid() {
		pe.Icmp.Address = ie.from.String()
	}
	return pe
}

// setup sets the socket's options, filters a raw socket's ICMP types, and
// binds the source address asked for.
func (e *echo) setup(s int, raw bool) error {
	type opt struct {
		level, name, value int
		what               string
	}
	var opts []opt
	if e.dst.Is4() {
		pmtu := unix.IP_PMTUDISC_DONT
		if e.dontFragment {
			pmtu = unix.IP_PMTUDISC_DO
		}
		opts = []opt{
			{unix.IPPROTO_IP, unix.IP_RECVERR, 1, "IP_RECVERR"},
			{unix.IPPROTO_IP, unix.IP_RECVTTL, 1, "IP_RECVTTL"},
			{unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, pmtu, "IP_MTU_DISCOVER"},
		}
		if e.ttl > 0 {
			opts = append(opts, opt{unix.IPPROTO_IP, unix.IP_TTL, e.ttl, "IP_TTL"})
		}
		if raw {
			// A raw socket is given every ICMP message the host receives:
			// only echo replies, then (the errors come on the error queue).
			opts = append(opts, opt{unix.SOL_RAW, icmpFilter, int(^uint32(1 << ipv4.ICMPTypeEchoReply)), "ICMP_FILTER"})
		}
	} else {
		opts = []opt{
			{unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1, "IPV6_RECVERR"},
			{unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1, "IPV6_RECVHOPLIMIT"},
		}
		if e.dontFragment {
			opts = append(opts,
				opt{unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO, "IPV6_MTU_DISCOVER"},
				opt{unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1, "IPV6_DONTFRAG"})
		}
		if e.ttl > 0 {
			opts = append(opts, opt{unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, e.ttl, "IPV6_UNICAST_HOPS"})
		}
		if raw {
			var filter unix.ICMPv6Filter
			for i := range filter.Data {
				filter.Data[i] = ^uint32(0) // a set bit blocks its type
			}
			reply := int(ipv6.ICMPTypeEchoReply)
			filter.Data[reply>>5] &^= 1 << (reply & 31)
			if err := unix.SetsockoptICMPv6Filter(s, unix.IPPROTO_ICMPV6, icmpv6Filter, &filter); err != nil {
				return os.NewSyscallError("setsockopt ICMPV6_FILTER", err)
			}
		}
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(s, o.level, o.name, o.value); err != nil {
			return os.NewSyscallError("setsockopt "+o.what, err)
		}
	}
	if e.src.IsValid() {
		return os.NewSyscallError("bind", unix.Bind(s, sockaddr(netip.AddrPortFrom(e.src, 0))))
	}
	return nil
}

// bound returns the local address of a connected echo socket, and the
// echo's identifier: a datagram socket's is its port, which the kernel
// chose.
func (e *echo) bound(s int, w *echoWait) (netip.Addr, uint16) {
	sa, err := unix.Getsockname(s)
	if err != nil {
		return netip.Addr{}, w.id
	}
	ap := addrPort(sa)
	if w.raw {
		return ap.Addr(), w.id
	}
	return ap.Addr(), ap.Port()
}

// openEcho makes the socket of an echo: an ICMP datagram socket where the
// system allows the process's group one (net.ipv4.ping_group_range), else
// a raw socket, where the process has CAP_NET_RAW.
func openEcho(v4 bool) (fd int, raw bool, err error) {
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if !v4 {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	const flags = unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC
	fd, err = unix.Socket(family, unix.SOCK_DGRAM|flags, proto)
	if err == nil {
		return fd, false, nil
	}
	if !errors.Is(err, unix.EACCES) {
		return -1, false, os.NewSyscallError("socket", err)
	}
	fd, rawErr := unix.Socket(family, unix.SOCK_RAW|flags, proto)
	switch {
	case rawErr == nil:
		return fd, true, nil
	case !errors.Is(rawErr, unix.EPERM) && !errors.Is(rawErr, unix.EACCES):
		return -1, false, os.NewSyscallError("socket", rawErr)
	}
	return -1, false, &icmpSocketDenied{groups: pingGroupRange(), gid: os.Getgid()}
}

// icmpSocketDenied is why the process may have no ICMP socket of either
// kind. It is an EACCES, which is what the kernel answered the datagram
// socket.
type icmpSocketDenied struct {
	// groups is net.ipv4.ping_group_range as the process reads it (in
	// its network namespace); gid is its group.
	groups string
	gid    int
}

func (e *icmpSocketDenied) Error() string {
	return fmt.Sprintf("socket: %v: an ICMP echo needs a datagram ICMP socket, which the sysctl net.ipv4.ping_group_range (%s here) must allow to the process's group (gid %d), or a raw socket, which needs CAP_NET_RAW", unix.EACCES, e.groups, e.gid)
}

func (e *icmpSocketDenied) Unwrap() error { return unix.EACCES }

// pingGroupRange reads net.ipv4.ping_group_range, quoted, for a message.
func pingGroupRange() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		return "unreadable"
	}
	return fmt.Sprintf("%q", strings.Join(strings.Fields(string(b)), " "))
}

// echoWait is an echo waiting for its reply: what the reply must carry,
// the buffers it is read into, and what came.
type echoWait struct {
	v6, raw bool
	// dst is the address the echo went to: a reply counts only from it
	// (a datagram socket, connected or not, takes replies from anyone
	// that echoes its identifier).
	dst     netip.Addr
	id, seq uint16
	payload []byte
	buf     []byte
	oob     [64]byte
	// errData is the start of the packet an ICMP error answers.
	errData [64]byte
	badRead int

	// What came: the reply, its sender, time and TTL; or an ICMP error;
	// or a local failure.
	replied  bool
	from     netip.Addr
	at       time.Time
	ttl      int
	icmpErr  *icmpError
	localErr error
}

// receive reads what came for the echo, without waiting: its reply, an
// ICMP error in answer to it, or neither yet (false: wait). Anything else
// is passed over: a raw socket sees the echoes of others, and a reply
// whose identifier, sequence number or data differ is not this echo's.
func (w *echoWait) receive(s int) bool {
	for {
		if ie, n, ok := recvICMPError(s, w.errData[:]); ok {
			if w.answers(w.errData[:n]) {
				w.icmpErr = &ie
				return true
			}
			continue
		}
		n, oobn, flags, from, err := unix.Recvmsg(s, w.buf, w.oob[:], unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN:
			return false
		case err == unix.EINTR:
			continue
		case icmpErrno(err):
			// An ICMP error, for this echo or another (a raw socket's
			// other echoes, or a forger's), was also the socket's error,
			// which this read took: the queue says whether it answers
			// this echo, and none that does not may end the wait,
			// however many come.
			continue
		case err != nil:
			if w.badRead++; w.badRead == maxBadReads {
				w.localErr = os.NewSyscallError("recvmsg", err)
				return true
			}
			continue
		}
		w.badRead = 0
		sender := addrPort(from).Addr().Unmap()
		if flags&unix.MSG_TRUNC != 0 || sender != w.dst || !w.isReply(w.buf[:n]) {
			continue
		}
		w.replied, w.at, w.from = true, time.Now(), sender
		w.ttl = receivedTTL(w.oob[:oobn])
		return true
	}
}

// answers reports whether b, the start of the packet an ICMP error
// answers, is this echo's request.
func (w *echoWait) answers(b []byte) bool {
	request := uint8(ipv4.ICMPTypeEcho)
	if w.v6 {
		request = uint8(ipv6.ICMPTypeEchoRequest)
	}
	return len(b) >= 8 && b[0] == request &&
		binary.BigEndian.Uint16(b[4:]) == w.id && binary.BigEndian.Uint16(b[6:]) == w.seq
}

// isReply reports whether b is this echo's reply: an echo reply with its
// identifier, sequence number and data.
func (w *echoWait) isReply(b []byte) bool {
	proto := 1 // ICMP
	var reply icmp.Type = ipv4.ICMPTypeEchoReply
	if w.v6 {
		proto, reply = 58, ipv6.ICMPTypeEchoReply // ICMPv6
	} else if w.raw {
		// A raw IPv4 socket reads the IP header too.
		if len(b) == 0 || len(b) < int(b[0]&0x0f)*4 {
			return false
		}
		b = b[int(b[0]&0x0f)*4:]
	}
	m, err := icmp.ParseMessage(proto, b)
	if err != nil || m.Type != reply {
		return false
	}
	body, ok := m.Body.(*icmp.Echo)
	return ok && body.ID == int(w.id) && body.Seq == int(w.seq) && bytes.Equal(body.Data, w.payload)
}

// receivedTTL reads the TTL (IP_TTL) or hop limit (IPV6_HOPLIMIT) the
// kernel gives with a datagram; 0 when it gives none.
func receivedTTL(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		v4 := m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL
		v6 := m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT
		if (v4 || v6) && len(m.Data) >= 4 {
			return int(int32(binary.NativeEndian.Uint32(m.Data)))
		}
	}
	return 0
}

// CheckEcho reports whether this process can send ICMP echoes (an IPv4
// socket of either kind), and why not: what a probe server with icmp
// modules says as it starts, rather than have every scrape fail.
func CheckEcho() error {
	fd, _, err := openEcho(true)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}
