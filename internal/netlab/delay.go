//go:build linux

package netlab

import (
	"net"
	"sync"
	"testing"
	"time"
)

// DelayProxy makes a slow path, since this kernel has no netem: it listens
// on addr inside the host and relays each connection to upstream, holding
// every chunk of data for delay in each direction. It delays the data, not
// the TCP handshakes, which complete at once. It stops when the test ends.
func (h *Host) DelayProxy(t testing.TB, addr, upstream string, delay time.Duration) {
	t.Helper()
	ln := h.Listen(t, addr)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			track(down)
			wg.Go(func() {
				defer down.Close()
				var up net.Conn
				err := h.Do(func() (err error) {
					up, err = net.DialTimeout("tcp", upstream, 5*time.Second)
					return err
				})
				if err != nil {
					return
				}
				track(up)
				defer up.Close()
				var relays sync.WaitGroup
				relays.Go(func() { relay(up.(*net.TCPConn), down, delay) })
				relays.Go(func() { relay(down.(*net.TCPConn), up, delay) })
				relays.Wait()
			})
		}
	})
}

// chunk is data read at one time, due for writing at another.
type chunk struct {
	due  time.Time
	data []byte
}

// relay copies src to dst, each chunk delay after it was read, then
// half-closes dst. It returns once src has ended.
func relay(dst *net.TCPConn, src net.Conn, delay time.Duration) {
	queue := make(chan chunk, 64)
	go func() {
		defer close(queue)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				queue <- chunk{time.Now().Add(delay), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for c := range queue {
		// After a failed write the rest is read and dropped, so that the
		// reader above ends with src.
		if failed {
			continue
		}
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.data); err != nil {
			failed = true
		}
	}
	dst.CloseWrite()
}
