package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/netprobe/netprobe/client"
)

// source serves n bytes to each connection, then closes it.
func source(ln net.Listener, n int64) {
	chunk := make([]byte, 256<<10)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			for left := n; left > 0; {
				w, err := c.Write(chunk[:min(int64(len(chunk)), left)])
				if err != nil {
					return
				}
				left -= int64(w)
			}
		}()
	}
}

// relay copies from the source to a sink that discards, through user
// space, as probed must, and returns the sink's throughput.
func relay(ctx context.Context, src string, n int64) (time.Duration, error) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer sink.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := sink.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		k, _ := io.Copy(io.Discard, c)
		got <- k
	}()
	var d net.Dialer
	start := time.Now()
	in, err := d.DialContext(ctx, "tcp", src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := d.DialContext(ctx, "tcp", sink.Addr().String())
	if err != nil {
		return 0, err
	}
	// Hiding ReaderFrom and WriterTo keeps the copy in user space (no
	// splice), like a relay that must look at the bytes.
	buf := make([]byte, 256<<10)
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, buf); err != nil {
		return 0, err
	}
	out.Close()
	if k := <-got; k != n {
		return 0, fmt.Errorf("the sink got %d bytes of %d", k, n)
	}
	return time.Since(start), nil
}

// benchFetch compares a Fetch of n bytes through probed to a client that
// discards them with a bare user-space relay of the same bytes.
func benchFetch(ctx context.Context, bin string, o options) ([]row, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	go source(ln, o.fetch)
	s, err := startProbed(bin, fmt.Sprintf("--max-fetch-bytes=%d", o.fetch))
	if err != nil {
		return nil, err
	}
	defer s.stop()

	fetch := func() (time.Duration, int, error) {
		start := time.Now()
		f, err := s.client.Fetch(ctx, "tcp", ln.Addr().String(), client.FetchOptions{MaxBytes: uint64(o.fetch), Timeout: time.Minute})
		if err != nil {
			return 0, 0, err
		}
		defer f.Close()
		var n int64
		chunks := 0
		for {
			b, err := f.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return 0, 0, err
			}
			n += int64(len(b))
			chunks++
		}
		if n != o.fetch {
			return 0, 0, fmt.Errorf("fetched %d bytes of %d", n, o.fetch)
		}
		return time.Since(start), chunks, nil
	}
	// Warm up: the first transfer grows the flow-control windows.
	if _, _, err := fetch(); err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	// Loopback throughput swings by a third from one transfer to the next
	// here: alternate the two, and compare the medians.
	var fds, rds []time.Duration
	var chunks int
	var before, after map[string]float64
	for round := range o.rounds {
		if round == 0 {
			if before, err = s.metrics(ctx); err != nil {
				return nil, err
			}
		}
		d, n, err := fetch()
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if round == 0 {
			chunks = n
			if after, err = s.metrics(ctx); err != nil {
				return nil, err
			}
		}
		rd, err := relay(ctx, ln.Addr().String(), o.fetch)
		if err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
		fds, rds = append(fds, d), append(rds, rd)
	}
	slices.Sort(fds)
	slices.Sort(rds)
	fd, rd := fds[len(fds)/2], rds[len(rds)/2]
	pRate, bRate := mib(o.fetch, fd), mib(o.fetch, rd)
	allocs := (after["go_memstats_mallocs_total"] - before["go_memstats_mallocs_total"]) / float64(chunks)
	bytes := (after["go_memstats_alloc_bytes_total"] - before["go_memstats_alloc_bytes_total"]) / float64(chunks)
	return []row{
		{fmt.Sprintf("Fetch MiB/s, %d MiB", o.fetch>>20), fmt.Sprintf("%.0f", pRate), fmt.Sprintf("%.0f", bRate), ratio(pRate, bRate), fmt.Sprintf("baseline: a user-space relay; medians of %d each; target >= 0.70", o.rounds)},
		{"  probed allocs per chunk", fmt.Sprintf("%.1f (%.1f KiB)", allocs, bytes/1024), "", "", fmt.Sprintf("%d chunks of %d KiB", chunks, o.fetch/int64(chunks)>>10)},
	}, nil
}
