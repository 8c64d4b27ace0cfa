//go:build linux

package netlab

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that has entered the namespace. Sockets fn
// makes belong to the namespace for good and can be used from any
// goroutine after Do returns: this is how a test puts its own servers on
// the hosts of its network.
func (ns *Namespace) Do(fn func() error) error {
	target, err := os.Open(filepath.Join("/run/netns", ns.Name))
	if err != nil {
		return fmt.Errorf("netlab: %w", err)
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		// Only this thread enters the namespace. Should it fail to come
		// back, the goroutine ends still locked and the runtime retires
		// the thread rather than reuse it.
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netlab: %w", err)
			return
		}
		defer home.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netlab: enter %s: %w", ns.Name, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("netlab: leave %s: %w", ns.Name, err)
			return
		}
		runtime.UnlockOSThread()
		done <- fnErr
	}()
	return <-done
}

// Listen opens a TCP listener on addr inside the namespace; it is closed
// when the test ends.
func (ns *Namespace) Listen(t testing.TB, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("netlab: listen on %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// ListenPacket opens a UDP socket on addr inside the namespace; it is
// closed when the test ends.
func (ns *Namespace) ListenPacket(t testing.TB, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("netlab: listen on udp %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}
