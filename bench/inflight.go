package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// benchInflight holds o.inflight Connect probes open against a target that
// never completes the handshake, then o.inflight idle Fetch streams against
// one that never sends, each in a fresh probed; it reports probed's memory,
// goroutines and descriptors during, and after cancelling them.
func benchInflight(ctx context.Context, bin probedBin, o options) ([]row, error) {
	port, release, err := probetest.Blackhole(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		return nil, err
	}
	defer release()
	connectRows, peak, err := holdMany(ctx, bin, o.inflight, "Connect", 128, func(ctx context.Context, c *client.Client) error {
		_, err := c.Connect(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port), client.ConnectOptions{Timeout: time.Minute})
		return err
	})
	if err != nil {
		return nil, err
	}
	naiveRow, err := naiveHold(ctx, o.inflight, port, peak)
	if err != nil {
		return nil, err
	}
	connectRows = append(connectRows, naiveRow)

	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			c, err := hold.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c)
			heldMu.Unlock()
		}
	}()
	defer func() {
		hold.Close()
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	}()
	fetchRows, _, err := holdMany(ctx, bin, o.inflight, "idle Fetch", 200, func(ctx context.Context, c *client.Client) error {
		f, err := c.Fetch(ctx, "tcp", hold.Addr().String(), client.FetchOptions{KeepWriteOpen: true, Timeout: time.Minute})
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.Next()
		return err
	})
	if err != nil {
		return nil, err
	}
	return append(connectRows, fetchRows...), nil
}

// holdMany runs n probes at once through a fresh probed until all are in
// flight, measures, cancels them all, and measures again. It returns
// the rows and probed's peak RSS in bytes.
func holdMany(ctx context.Context, bin probedBin, n int, what string, targetMiB int64, probe func(context.Context, *client.Client) error) ([]row, int64, error) {
	s, err := startProbed(bin)
	if err != nil {
		return nil, 0, err
	}
	defer s.stop()
	if _, err := s.client.Health(ctx); err != nil {
		return nil, 0, err
	}
	base, err := s.stats(ctx)
	if err != nil {
		return nil, 0, err
	}

	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			if err := probe(pctx, s.client); err != nil && pctx.Err() == nil {
				errs <- err
			}
		})
	}
	deadline := time.Now().Add(time.Minute)
	for {
		m, err := s.metrics(ctx)
		if err != nil {
			return nil, 0, err
		}
		if int(m["netprobe_probes_in_flight"]) >= n {
			break
		}
		select {
		case err := <-errs:
			return nil, 0, fmt.Errorf("%s: %w", what, err)
		default:
		}
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("%s: only %.0f of %d in flight after a minute", what, m["netprobe_probes_in_flight"], n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	during, err := s.stats(ctx)
	if err != nil {
		return nil, 0, err
	}

	cancelled := time.Now()
	cancel()
	wg.Wait()
	var after stats
	settled := time.Duration(-1)
	for time.Since(cancelled) < 5*time.Second {
		if after, err = s.stats(ctx); err != nil {
			return nil, 0, err
		}
		if after.fds <= base.fds && after.goroutines <= base.goroutines {
			settled = time.Since(cancelled)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	back := fmt.Sprintf("back to baseline %v after cancelling", settled.Round(time.Millisecond))
	if settled < 0 {
		back = "NOT back to baseline 5s after cancelling"
	}
	perProbe := float64(during.rssKiB-base.rssKiB) / float64(n)
	return []row{
		{fmt.Sprintf("%d %s in flight: probed peak RSS", n, what), fmt.Sprintf("%d MiB", during.peakKiB>>10), fmt.Sprintf("%d MiB idle", base.rssKiB>>10), "", fmt.Sprintf("%.1f KiB per probe; target <= %d MiB", perProbe, targetMiB)},
		{"  Go stacks, heap in use while held", fmt.Sprintf("%.0f MiB, %.0f MiB", during.stackMiB, during.heapMiB), "", "", ""},
		{"  goroutines: idle, held, after", fmt.Sprintf("%.0f, %.0f, %.0f", base.goroutines, during.goroutines, after.goroutines), "", "", back},
		{"  open fds: idle, held, after", fmt.Sprintf("%d, %d, %d", base.fds, during.fds, after.fds), "", "", ""},
	}, during.peakKiB << 10, nil
}

// naiveHold holds n Connects open, as holdMany does, in the naive prober
// (see naiveProber): a gRPC server that only dials, the floor for one
// call per probe. Its row sets its peak RSS beside probed's, probedPeak
// bytes.
func naiveHold(ctx context.Context, n int, port uint16, probedPeak int64) (row, error) {
	ns, err := startNaiveProber(ctx)
	if err != nil {
		return row{}, err
	}
	defer ns.stop()
	c, err := client.Dial(ns.addr)
	if err != nil {
		return row{}, err
	}
	defer c.Close()
	// One Connect first, so that the client's connection is counted idle.
	ln, err := acceptingTarget()
	if err != nil {
		return row{}, err
	}
	_, err = c.Connect(ctx, "tcp", ln.Addr().String(), client.ConnectOptions{})
	ln.Close()
	if err != nil {
		return row{}, fmt.Errorf("naive prober: %w", err)
	}
	var idle stats
	if err := idle.readProc(ns.pid); err != nil {
		return row{}, err
	}
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := c.Connect(pctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port), client.ConnectOptions{Timeout: time.Minute})
			if pctx.Err() == nil {
				errs <- fmt.Errorf("a held Connect ended: %v", err)
			}
		})
	}
	// The naive prober has no metrics: a dial in flight is a descriptor.
	deadline := time.Now().Add(time.Minute)
	var held stats
	for {
		if err := held.readProc(ns.pid); err != nil {
			return row{}, err
		}
		if held.fds-idle.fds >= n {
			break
		}
		select {
		case err := <-errs:
			return row{}, fmt.Errorf("naive prober: %w", err)
		default:
		}
		if time.Now().After(deadline) {
			return row{}, fmt.Errorf("naive prober: only %d of %d dials in flight after a minute", held.fds-idle.fds, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	peak, base := held.peakKiB<<10, idle.rssKiB<<10
	return row{
		"  a naive gRPC prober holding as many", fmt.Sprintf("%d MiB", peak>>20), fmt.Sprintf("%d MiB idle", base>>20), "",
		fmt.Sprintf("%.1f KiB per probe; the floor: a gRPC Connect that only dials (ghz's naive prober), in a process of its own; probed's peak %s of it", float64(peak-base)/1024/float64(n), ratio(float64(probedPeak), float64(peak))),
	}, nil
}
