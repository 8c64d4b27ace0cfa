package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// blackboxExporter is Debian's name of blackbox_exporter's binary.
const blackboxExporter = "prometheus-blackbox-exporter"

// benchScrape measures /probe scrapes of tcp_connect a second, at 1 and
// 64 in flight, next to blackbox_exporter's tcp_connect module on the
// same target in the same run, when it is installed.
func benchScrape(ctx context.Context, bin probedBin, o options) ([]row, error) {
	ln, err := acceptingTarget()
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	target := ln.Addr().String()
	s, err := startProbed(bin, "--metrics-addr=127.0.0.1:0", "--scrape-rate=1e9", "--scrape-burst=1000000000")
	if err != nil {
		return nil, err
	}
	defer s.stop()
	netprobe := scraper("http://" + s.MetricsAddr + "/probe?module=tcp_connect&target=" + target)

	var blackbox func(context.Context) error
	note := ""
	if path, err := exec.LookPath(blackboxExporter); err == nil {
		addr, stop, err := startBlackbox(ctx, path)
		if err != nil {
			return nil, err
		}
		defer stop()
		blackbox = scraper("http://" + addr + "/probe?module=tcp_connect&target=" + target)
	} else {
		if os.Getenv("CI") == "true" {
			return nil, errors.New("blackbox_exporter is not installed (apt-get install prometheus-blackbox-exporter), and CI=true forbids skipping it")
		}
		note = "blackbox_exporter not installed (apt-get install prometheus-blackbox-exporter): no baseline"
	}
	// Warm both up.
	for _, op := range []func(context.Context) error{netprobe, blackbox} {
		if op == nil {
			continue
		}
		if _, _, err := loop(ctx, 4, 200*time.Millisecond, op); err != nil {
			return nil, err
		}
	}
	var rows []row
	for _, workers := range []int{1, 64} {
		var nRates, bRates []float64
		for range o.rounds {
			rate, _, err := loop(ctx, workers, o.duration, netprobe)
			if err != nil {
				return nil, fmt.Errorf("/probe: %w", err)
			}
			nRates = append(nRates, rate)
			if blackbox != nil {
				if rate, _, err = loop(ctx, workers, o.duration, blackbox); err != nil {
					return nil, fmt.Errorf("blackbox_exporter: %w", err)
				}
				bRates = append(bRates, rate)
			}
		}
		r := row{Figure: fmt.Sprintf("/probe scrapes/s, %d in flight", workers), Netprobe: fmt.Sprintf("%.0f", median(nRates)), Note: note}
		if blackbox != nil {
			r.Baseline, r.Ratio = fmt.Sprintf("%.0f", median(bRates)), ratio(median(nRates), median(bRates))
			r.Note = "baseline: blackbox_exporter's tcp_connect, same target; goal >= 3"
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// scraper returns an operation that scrapes url and checks that the probe
// succeeded.
func scraper(url string) func(context.Context) error {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if !bytes.Contains(body, []byte("\nprobe_success 1\n")) {
			return fmt.Errorf("%s: the probe failed:\n%s", url, body)
		}
		return nil
	}
}

// startBlackbox runs blackbox_exporter on a free loopback port with a
// tcp_connect module, and waits until it answers.
func startBlackbox(ctx context.Context, path string) (addr string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "bench-blackbox")
	if err != nil {
		return "", nil, err
	}
	config := filepath.Join(dir, "blackbox.yml")
	if err := os.WriteFile(config, []byte("modules:\n  tcp_connect:\n    prober: tcp\n"), 0o600); err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr = ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(ctx, path, "--config.file="+config, "--web.listen-address="+addr, "--log.level=error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/-/healthy")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr, stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("blackbox_exporter did not come up on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
