package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// relayCopy dials src and dst and copies the one to the other through
// user space, as probed must.
func relayCopy(ctx context.Context, src, dst string) error {
	var d net.Dialer
	in, err := d.DialContext(ctx, "tcp", src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := d.DialContext(ctx, "tcp", dst)
	if err != nil {
		return err
	}
	defer out.Close()
	// Hiding ReaderFrom and WriterTo keeps the copy in user space (no
	// splice), like a relay that must look at the bytes.
	buf := make([]byte, 256<<10)
	_, err = io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, buf)
	return err
}

// relay times a relay of n bytes from src to a sink here that discards
// them: the relay in this process, or, apart, in a process of its own
// (this program again, with -relay-from), as probed relays apart from its
// source and its caller. Apart, it also returns the CPU time the relay's
// process took.
func relay(ctx context.Context, src string, n int64, apart bool) (took, cpu time.Duration, err error) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
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
	start := time.Now()
	if apart {
		self, err := os.Executable()
		if err != nil {
			return 0, 0, err
		}
		cmd := exec.CommandContext(ctx, self, "-relay-from", src, "-relay-to", sink.Addr().String())
		out, err := cmd.Output()
		if err != nil {
			return 0, 0, err
		}
		// The child's own clock: its start-up is not the relay's.
		if took, err = time.ParseDuration(strings.TrimSpace(string(out))); err != nil {
			return 0, 0, err
		}
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	} else if err := relayCopy(ctx, src, sink.Addr().String()); err != nil {
		return 0, 0, err
	}
	if k := <-got; k != n {
		return 0, 0, fmt.Errorf("the sink got %d bytes of %d", k, n)
	}
	if !apart {
		took = time.Since(start)
	}
	return took, cpu, nil
}

// runRelay is the -relay-from side of relay.
func runRelay(ctx context.Context, o options, out io.Writer) error {
	start := time.Now()
	if err := relayCopy(ctx, o.relayFrom, o.relayTo); err != nil {
		return err
	}
	_, err := fmt.Fprintln(out, time.Since(start))
	return err
}

// benchFetch compares a Fetch of n bytes through probed to a client that
// discards them with a bare user-space relay of the same bytes.
func benchFetch(ctx context.Context, bin probedBin, o options) ([]row, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	go probetest.SendAndClose(ln, o.fetch)
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
	// here: take turns, and compare the medians.
	var fds, rds, ads, relayCPU []time.Duration
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
		rd, _, err := relay(ctx, ln.Addr().String(), o.fetch, false)
		if err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
		ad, cpu, err := relay(ctx, ln.Addr().String(), o.fetch, true)
		if err != nil {
			return nil, fmt.Errorf("relay from a process of its own: %w", err)
		}
		fds, rds, ads, relayCPU = append(fds, d), append(rds, rd), append(ads, ad), append(relayCPU, cpu)
	}
	pRate, bRate, aRate := mib(o.fetch, median(fds)), mib(o.fetch, median(rds)), mib(o.fetch, median(ads))
	allocs := (after["go_memstats_mallocs_total"] - before["go_memstats_mallocs_total"]) / float64(chunks)
	bytes := (after["go_memstats_alloc_bytes_total"] - before["go_memstats_alloc_bytes_total"]) / float64(chunks)
	// CPU per MiB moved, of probed (in the first round) and of the relay
	// apart (the median): what each middle process spends on the bytes.
	mibs := float64(o.fetch) / (1 << 20)
	probedCPU := time.Duration((after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]) / mibs * float64(time.Second))
	relayCPUPerMiB := time.Duration(float64(median(relayCPU)) / mibs)
	return []row{
		{fmt.Sprintf("Fetch MiB/s, %d MiB", o.fetch>>20), fmt.Sprintf("%.0f", pRate), fmt.Sprintf("%.0f", bRate), ratio(pRate, bRate), fmt.Sprintf("target >= 0.70; baseline: a user-space relay in the source's process; medians of %d each", o.rounds)},
		{"  baseline relaying from its own process", "", fmt.Sprintf("%.0f", aRate), ratio(pRate, aRate), "as probed relays; goal >= 0.85"},
		{"  CPU per MiB, probed and the relay apart", us(probedCPU), us(relayCPUPerMiB), ratio(float64(probedCPU), float64(relayCPUPerMiB)), "the middle process's user and system time"},
		{"  probed allocs per chunk", fmt.Sprintf("%.1f (%.1f KiB)", allocs, bytes/1024), "", "", fmt.Sprintf("%d chunks of %d KiB", chunks, o.fetch/int64(chunks)>>10)},
	}, nil
}
