package probetest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Blackhole opens a listener on ip (127.0.0.1 or ::1) whose accept queue is
// full, so the kernel drops further SYNs and a connect to it waits without
// any packet leaving loopback. release closes it.
func Blackhole(ip netip.Addr) (port uint16, release func(), err error) {
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ip.Is4() {
		sa = &unix.SockaddrInet4{Addr: ip.As4()}
	} else {
		sa, family = &unix.SockaddrInet6{Addr: ip.As16()}, unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("blackhole: %w", err)
	}
	var filler net.Conn
	release = func() {
		if filler != nil {
			filler.Close()
		}
		unix.Close(fd)
	}
	fail := func(err error) (uint16, func(), error) {
		release()
		return 0, nil, fmt.Errorf("blackhole: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail(err)
	}
	// A backlog of 0 lets one connection wait in the accept queue.
	if err := unix.Listen(fd, 0); err != nil {
		return fail(err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return fail(err)
	}
	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		port = uint16(b.Port)
	case *unix.SockaddrInet6:
		port = uint16(b.Port)
	}
	if filler, err = net.DialTimeout("tcp", netip.AddrPortFrom(ip, port).String(), Timeout); err != nil {
		return fail(err)
	}
	// For a listener, TCP_INFO reports the accept queue's length in unacked
	// and its limit in sacked: wait for the kernel to count it full.
	deadline := time.Now().Add(Timeout)
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return fail(err)
		}
		if info.Unacked > info.Sacked {
			return port, release, nil
		}
		if time.Now().After(deadline) {
			return fail(errors.New("the accept queue never filled"))
		}
		time.Sleep(time.Millisecond)
	}
}
