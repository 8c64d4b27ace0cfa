package admission

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestConnLimiterRefusals plays a client that opens connection after
// connection past the per-source cap while the ones served are busy (not
// evictable): each is refused, and refusing it gives back no place, so the
// count, the gauge and the caps are what they were, however many were
// refused; when the served ones close, exactly the cap's worth is served
// again.
func TestConnLimiterRefusals(t *testing.T) {
	const perSource, max, extra = 2, 3, 20
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := prometheus.NewGauge(prometheus.GaugeOpts{Name: "open"})
	var mu sync.Mutex
	refused := map[string]int{}
	l := NewConnLimiter(max, perSource, open, func(reason string) {
		mu.Lock()
		defer mu.Unlock()
		refused[reason]++
	})
	ll := l.Listener(lis)
	t.Cleanup(func() { ll.Close() })
	accepted := make(chan net.Conn, max+extra)
	go func() {
		for {
			c, err := ll.Accept()
			if err != nil {
				return
			}
			SetEvictable(c, false)
			accepted <- c
		}
	}()

	// serve dials one connection and reports whether it was served: a
	// refused one is reset before any byte, which the client reads as an
	// error; a served one is handed out by Accept.
	serve := func() (net.Conn, bool) {
		t.Helper()
		c, err := net.Dial("tcp", lis.Addr().String())
		if errors.Is(err, syscall.ECONNRESET) {
			// Reset so soon that the dial saw it.
			return nil, false
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		read := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			read <- err
		}()
		select {
		case s := <-accepted:
			return s, true
		case err := <-read:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("a refused connection read %v, want a reset", err)
			}
			return nil, false
		case <-time.After(10 * time.Second):
			t.Fatal("a connection neither served nor refused")
			return nil, false
		}
	}
	check := func(when string, want int) {
		t.Helper()
		l.mu.Lock()
		total, bySource := l.total, l.bySource[sourceOf(lis.Addr())]
		l.mu.Unlock()
		var gauge dto.Metric
		if err := open.Write(&gauge); err != nil {
			t.Fatal(err)
		}
		if total != want || bySource != want || gauge.GetGauge().GetValue() != float64(want) {
			t.Fatalf("%s: %d counted, %d from the source, gauge %v; want %d", when, total, bySource, gauge.GetGauge().GetValue(), want)
		}
	}

	var served []net.Conn
	for range perSource {
		s, ok := serve()
		if !ok {
			t.Fatal("a connection within the cap was refused")
		}
		served = append(served, s)
	}
	for i := range extra {
		if s, ok := serve(); ok {
			s.Close()
			t.Fatalf("connection %d past the cap of %d was served", perSource+i+1, perSource)
		}
	}
	check("after the refusals", perSource)
	mu.Lock()
	if refused["connections_per_source"] != extra || refused["evicted"] != 0 {
		t.Errorf("refusals %v, want %d connections_per_source", refused, extra)
	}
	mu.Unlock()
	for _, s := range served {
		s.Close()
	}
	check("after the served closed", 0)
	for range perSource {
		if _, ok := serve(); !ok {
			t.Fatal("a connection within the cap was refused after the others closed")
		}
	}
	if s, ok := serve(); ok {
		s.Close()
		t.Fatalf("connection %d was served: the refusals gave places away", perSource+1)
	}
	check("at the cap again", perSource)
}
