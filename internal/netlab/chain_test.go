//go:build linux

package netlab_test

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/netprobe/netprobe/internal/netlab"
)

// TestChain checks the chain's routes and each of its faults with a plain
// connect from the client, in both families: the kernel's errno says
// which router answered how.
func TestChain(t *testing.T) {
	const (
		open     = 80
		dropped  = 81
		rejected = 82
	)
	c := netlab.NewChain(t, 3)
	for _, ip := range []netip.Addr{c.Target.V4, c.Target.V6} {
		for _, p := range []uint16{open, dropped, rejected} {
			ln := c.Target.Listen(t, netip.AddrPortFrom(ip, p).String())
			go func() {
				for {
					conn, err := ln.Accept()
					if err != nil {
						return
					}
					conn.Close()
				}
			}()
		}
	}
	c.Filter(t, 2, dropped, netlab.Drop)
	c.Filter(t, 2, rejected, netlab.Reject)

	// An ICMP error that comes back while connect(2) still holds the
	// socket (as it can, from next door) is soft: the dial fails on the
	// SYN sent again a second later. So a dial that must fail with an
	// errno has seconds; one that must time out, half of one.
	dial := func(ip netip.Addr, port uint16, want syscall.Errno) error {
		timeout := 5 * time.Second
		if want == syscall.ETIMEDOUT {
			timeout = 500 * time.Millisecond
		}
		return c.Client.Do(func() error {
			conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(ip, port).String(), timeout)
			if err == nil {
				conn.Close()
			}
			return err
		})
	}
	for _, tc := range []struct {
		name string
		port uint16
		// want4 and want6 are the errnos of each family; 0 is success,
		// and ETIMEDOUT the dial's own timeout.
		want4, want6 syscall.Errno
	}{
		{"open", open, 0, 0},
		{"dropped at r2", dropped, syscall.ETIMEDOUT, syscall.ETIMEDOUT},
		// Linux makes IPv4's administratively prohibited EHOSTUNREACH,
		// and IPv6's EACCES.
		{"rejected at r2", rejected, syscall.EHOSTUNREACH, syscall.EACCES},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkErrno(t, "IPv4", dial(c.Target.V4, tc.port, tc.want4), tc.want4)
			checkErrno(t, "IPv6", dial(c.Target.V6, tc.port, tc.want6), tc.want6)
		})
	}
	t.Run("no route at r1", func(t *testing.T) {
		c.NoRoute(t, 1)
		checkErrno(t, "IPv4", dial(c.Target.V4, open, syscall.ENETUNREACH), syscall.ENETUNREACH)
		checkErrno(t, "IPv6", dial(c.Target.V6, open, syscall.ENETUNREACH), syscall.ENETUNREACH)
	})
}

func checkErrno(t *testing.T, family string, err error, want syscall.Errno) {
	t.Helper()
	switch {
	case want == 0 && err != nil:
		t.Errorf("%s: %v, want a connection", family, err)
	case want == syscall.ETIMEDOUT && !isTimeout(err):
		t.Errorf("%s: %v, want the dial's timeout", family, err)
	case want != 0 && want != syscall.ETIMEDOUT && !errors.Is(err, want):
		t.Errorf("%s: %v, want %v", family, err, want)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
