package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// benchConnect compares Connect probes with a bare dial+close loop against
// the same target, at 1, 16 and 64 in flight, and counts the server's
// allocations per probe.
func benchConnect(ctx context.Context, bin probedBin, o options) ([]row, error) {
	ln, err := acceptingTarget()
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	target := ln.Addr().String()
	s, err := startProbed(bin)
	if err != nil {
		return nil, err
	}
	defer s.stop()

	bare := bareDial(target)
	probe := func(ctx context.Context) error {
		_, err := s.client.Connect(ctx, "tcp", target, client.ConnectOptions{Timeout: 5 * time.Second})
		return err
	}
	// Warm both paths up.
	if _, _, err := loop(ctx, 4, 200*time.Millisecond, probe); err != nil {
		return nil, fmt.Errorf("connect probes: %w", err)
	}
	if _, _, err := loop(ctx, 4, 200*time.Millisecond, bare); err != nil {
		return nil, fmt.Errorf("bare dial: %w", err)
	}

	// The floor: a gRPC call that dials nothing.
	health := func(ctx context.Context) error {
		_, err := s.client.Health(ctx)
		return err
	}
	hRate, hLat, err := loop(ctx, 1, o.duration, health)
	if err != nil {
		return nil, fmt.Errorf("health: %w", err)
	}
	h64Rate, _, err := loop(ctx, 64, o.duration, health)
	if err != nil {
		return nil, fmt.Errorf("health: %w", err)
	}
	rows := []row{
		{"gRPC health check, 1 in flight", fmt.Sprintf("%.0f/s, p50 %s", hRate, us(percentile(hLat, 0.5))), "", "", "the floor: a call that dials nothing"},
		{"gRPC health check, 64 in flight", fmt.Sprintf("%.0f/s", h64Rate), "", "", "the ceiling for one call per probe"},
	}
	// Rates swing from one run to the next here: each figure is the median
	// of o.rounds runs, netprobe and its baselines taking turns.
	for _, workers := range []int{1, 16, 64} {
		var pRates, bRates, aRates []float64
		var pLat, bLat, aP50s []time.Duration
		var before, after map[string]float64
		for round := range o.rounds {
			if round == 0 {
				if before, err = s.metrics(ctx); err != nil {
					return nil, err
				}
			}
			rate, lat, err := loop(ctx, workers, o.duration, probe)
			if err != nil {
				return nil, fmt.Errorf("connect probes: %w", err)
			}
			pRates, pLat = append(pRates, rate), append(pLat, lat...)
			if round == 0 {
				if after, err = s.metrics(ctx); err != nil {
					return nil, err
				}
			}
			if rate, lat, err = loop(ctx, workers, o.duration, bare); err != nil {
				return nil, fmt.Errorf("bare dial: %w", err)
			}
			bRates, bLat = append(bRates, rate), append(bLat, lat...)
			apart, err := bareApart(ctx, target, workers, o.duration, 0)
			if err != nil {
				return nil, fmt.Errorf("bare dial from a process of its own: %w", err)
			}
			aRates, aP50s = append(aRates, apart.Rate), append(aP50s, apart.P50)
		}
		slices.Sort(pLat)
		slices.Sort(bLat)
		pRate, bRate, aRate, aP50 := median(pRates), median(bRates), median(aRates), median(aP50s)
		target := ""
		if workers == 64 {
			target = "target >= 0.70"
		}
		p50, p99 := percentile(pLat, 0.5), percentile(pLat, 0.99)
		rows = append(rows,
			row{fmt.Sprintf("Connect/s, %d in flight", workers), fmt.Sprintf("%.0f", pRate), fmt.Sprintf("%.0f", bRate), ratio(pRate, bRate), joinNonEmpty(target, "baseline: the dialer in the target's process")},
			row{"  baseline dialing from its own process", "", fmt.Sprintf("%.0f", aRate), ratio(pRate, aRate), "as probed dials"},
			row{fmt.Sprintf("  p50 latency, %d in flight", workers), us(p50), us(percentile(bLat, 0.5)), ratio(float64(p50), float64(percentile(bLat, 0.5))), map[bool]string{true: "target <= 5"}[workers == 1]},
			row{"  p50, baseline from its own process", "", us(aP50), ratio(float64(p50), float64(aP50)), ""},
			row{fmt.Sprintf("  p99 latency, %d in flight", workers), us(p99), us(percentile(bLat, 0.99)), ratio(float64(p99), float64(percentile(bLat, 0.99))), ""},
		)
		if workers == 64 {
			probes := after["netprobe_probes_total"] - before["netprobe_probes_total"]
			allocs := (after["go_memstats_mallocs_total"] - before["go_memstats_mallocs_total"]) / probes
			bytes := (after["go_memstats_alloc_bytes_total"] - before["go_memstats_alloc_bytes_total"]) / probes
			cpu := (after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]) / probes
			rows = append(rows,
				row{"  probed allocs per Connect", fmt.Sprintf("%.0f (%.1f KiB)", allocs, bytes/1024), "", "", "server side, metrics included"},
				row{"  probed CPU per Connect", us(time.Duration(cpu * float64(time.Second))), "", "", ""},
			)
		}
	}
	var sRates, bRates, aRates []float64
	for range o.rounds {
		rate, err := sweepRate(ctx, s, target, o.duration)
		if err != nil {
			return nil, fmt.Errorf("sweep: %w", err)
		}
		bRate, _, err := loop(ctx, 64, o.duration, bare)
		if err != nil {
			return nil, fmt.Errorf("bare dial: %w", err)
		}
		apart, err := bareApart(ctx, target, 64, o.duration, 0)
		if err != nil {
			return nil, fmt.Errorf("bare dial from a process of its own: %w", err)
		}
		sRates, bRates, aRates = append(sRates, rate), append(bRates, bRate), append(aRates, apart.Rate)
	}
	sRate, bRate, aRate := median(sRates), median(bRates), median(aRates)
	rows = append(rows,
		row{"Sweep probes/s, 64 at once", fmt.Sprintf("%.0f", sRate), fmt.Sprintf("%.0f", bRate), ratio(sRate, bRate), "one call per 1,000 targets; goal >= 0.85; baseline: the dialer in the target's process"},
		row{"  baseline dialing from its own process", "", fmt.Sprintf("%.0f", aRate), ratio(sRate, aRate), "as probed dials"},
	)
	return rows, nil
}

// sweepRate runs sweeps of 1,000 targets at a concurrency of 64, back to
// back, for d, and returns the probes per second.
func sweepRate(ctx context.Context, s *server, target string, d time.Duration) (float64, error) {
	targets := make([]client.SweepTarget, 1000)
	for i := range targets {
		targets[i] = client.SweepTarget{Network: "tcp", Address: target}
	}
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		for r, err := range s.client.Sweep(ctx, targets, client.SweepOptions{Concurrency: 64}) {
			if err != nil {
				return 0, err
			}
			if r.Err != nil {
				return 0, r.Err
			}
			n++
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// bareDial is the raw baseline: dial target and close, nothing else.
func bareDial(target string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// bareFigures are what a bare dialer apart from the target measured.
type bareFigures struct {
	Rate     float64
	P50, P99 time.Duration
}

// bareApart runs the bare dial loop from a process of its own, this
// program run again with -bare-dial. probed dials from a process apart
// from the target too, and waking a process costs more than waking a
// goroutine: the loop in the target's own process is the faster of the
// two baselines, and both are reported. With sleep, one worker sleeps that
// long before each dial (see sleptDials).
func bareApart(ctx context.Context, target string, workers int, d, sleep time.Duration) (bareFigures, error) {
	self, err := os.Executable()
	if err != nil {
		return bareFigures{}, err
	}
	out, err := exec.CommandContext(ctx, self, "-bare-dial", target, "-workers", strconv.Itoa(workers), "-duration", d.String(), "-bare-sleep", sleep.String()).Output()
	if err != nil {
		return bareFigures{}, err
	}
	var f bareFigures
	if err := json.Unmarshal(out, &f); err != nil {
		return bareFigures{}, fmt.Errorf("%w: %q", err, out)
	}
	return f, nil
}

// runBareDial is the -bare-dial side of bareApart.
func runBareDial(ctx context.Context, o options, out io.Writer) error {
	var (
		rate float64
		lat  []time.Duration
		err  error
	)
	if o.bareSleep > 0 {
		lat, err = sleptDials(ctx, o.bareDial, o.bareSleep, o.duration)
	} else {
		rate, lat, err = loop(ctx, o.workers, o.duration, bareDial(o.bareDial))
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(bareFigures{Rate: rate, P50: percentile(lat, 0.5), P99: percentile(lat, 0.99)})
}

// sleptDials dials target and closes, one at a time for d, sleeping before
// each dial, and returns the dials' sorted latencies. A lone probe's dial
// follows a moment in which probed had nothing to do; a loop that never
// sleeps never pays for the kernel waking what did, nor for caches that
// went cold meanwhile.
func sleptDials(ctx context.Context, target string, sleep, d time.Duration) ([]time.Duration, error) {
	dial := bareDial(target)
	var lat []time.Duration
	for end := time.Now().Add(d); ctx.Err() == nil && time.Now().Before(end); {
		time.Sleep(sleep)
		t := time.Now()
		if err := dial(ctx); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t))
	}
	if len(lat) == 0 {
		return nil, errors.New("no dial completed")
	}
	slices.Sort(lat)
	return lat, nil
}

// acceptingTarget is a loopback target that accepts each connection and
// closes it: what Connect probes and the bare dial loop both reach.
func acceptingTarget() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go probetest.AcceptAndClose(ln)
	return ln, nil
}
