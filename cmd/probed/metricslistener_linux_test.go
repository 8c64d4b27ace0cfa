package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// dialFrom opens n connections to addr from the loopback address source
// (Linux answers on all of 127.0.0.0/8), each its own source port. A
// connection the server resets as it accepts it may fail to open at all:
// it is left out.
func dialFrom(t *testing.T, source, addr string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: probetest.Timeout}
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := d.DialContext(probetest.Context(t), "tcp", addr)
		if errors.Is(err, syscall.ECONNRESET) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

// healthy sends a health check on each connection and returns those that
// answered it; a connection over a cap was closed as it was accepted, and
// answers nothing.
func healthy(conns []net.Conn) []net.Conn {
	var out []net.Conn
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(probetest.Timeout))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: probed\r\n\r\n"); err != nil {
			continue
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			out = append(out, c)
		}
	}
	return out
}

// TestMetricsConnectionCaps floods the metrics listener with connections
// that send nothing, from two sources, under a cap of 64 connections, 48
// from one source: each new connection takes the place of the oldest
// that waits (of its own source when that is full), so the newest 64 are
// served, 48 of the second source's and the last 16 of the first's; gRPC
// serves meanwhile; and the idle timeout closes the keep-alive
// connections, giving their places back. (Before, 5,000 connections were
// held open and, with 1,024 file descriptors, probes and scrapes failed;
// then the first 64 held their places against everyone after them.)
func TestMetricsConnectionCaps(t *testing.T) {
	t.Parallel()
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0",
		"--metrics-max-connections=64", "--metrics-max-connections-per-source=48", "--metrics-idle-timeout=1s"))
	// They are accepted in the order they connected: a's, then b's. Each
	// waits for its request (under the 10 s read-header timeout, not the
	// idle timeout) until all are open.
	a := dialFrom(t, "127.0.0.1", p.MetricsAddr, 100)
	b := dialFrom(t, "127.0.0.2", p.MetricsAddr, 100)
	// A dial returns once the kernel has the connection, before probed
	// accepts it. The last of b's to be evicted goes as the last is
	// accepted: then every one has been.
	if err := probetest.WaitClosed(b[len(b)-49]); err != nil {
		t.Fatalf("the 49th newest connection from 127.0.0.2 was not evicted: %v", err)
	}
	heldA, heldB := healthy(a), healthy(b)
	if len(heldA) != 16 || len(heldB) != 48 || heldA[0] != a[84] || heldB[0] != b[52] {
		t.Errorf("connections answered: %d from 127.0.0.1, %d from 127.0.0.2; want the newest: 16 and 48 (its cap)", len(heldA), len(heldB))
	}
	live := probetest.Listen(t, "127.0.0.1:0", nil)
	if _, err := client.New(dial(t, p.Addr)).Connect(probetest.Context(t), "tcp", live.Addr(), client.ConnectOptions{}); err != nil {
		t.Errorf("a gRPC probe with the metrics listener full: %v", err)
	}
	for _, c := range append(heldA, heldB...) {
		if err := probetest.WaitClosed(c); err != nil {
			t.Fatalf("a keep-alive connection outlived the idle timeout: %v", err)
		}
	}
	m := scrape(t, "http://"+p.MetricsAddr+"/metrics")
	for limit, want := range map[string]float64{"metrics_evicted": 136, "metrics_connections_per_source": 0, "metrics_connections": 0} {
		if got, _ := metricValue(m["netprobe_limit_refusals_total"], map[string]string{"limit": limit}); got != want {
			t.Errorf("netprobe_limit_refusals_total{limit=%q} = %v, want %v", limit, got, want)
		}
	}
	// The scrape's own connection. A client may see its connection
	// closed a moment before the server counts it out: wait for that.
	var open float64
	probetest.Eventually(t, func() bool {
		open, _ = metricValue(scrape(t, "http://"+p.MetricsAddr+"/metrics")["netprobe_metrics_connections"], nil)
		return open == 1
	}, func() string {
		return fmt.Sprintf("netprobe_metrics_connections = %v once the idle ones closed, want 1", open)
	})
}

// processCPU is the CPU time process pid has used, user and system, from
// /proc/PID/stat.
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command's name, in parentheses, may hold spaces; utime and stime
	// are the 14th and 15th fields, the 12th and 13th after it.
	_, rest, _ := strings.Cut(string(b), ") ")
	fields := strings.Fields(rest)
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		ticks += n
	}
	// Linux reports them in USER_HZ, 100 a second on every architecture.
	return time.Duration(ticks) * 10 * time.Millisecond
}

// TestBasicAuthFlood sends 100 wrong passwords from one address to a
// metrics listener with basic auth users (bcrypt, cost 10): a handful are
// hashed (401) and the rest refused with 429 before the hash, so probed's
// CPU stays within a few hashes' worth. A Prometheus that passed before,
// from the same address, still passes, and another address has a budget
// of its own. (Before, each wrong password cost a bcrypt: 188 in 8 s cost
// 11 s of CPU.)
func TestBasicAuthFlood(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("scrape-secret"), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	web := writeFile(t, "web.yml", fmt.Sprintf("basic_auth_users:\n  prometheus: %s\n", hash))
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--web-config-file="+web))
	pid := p.Cmd.Process.Pid
	metrics := "http://" + p.MetricsAddr + "/metrics"
	// get sends a GET from source with a password, on a connection of
	// that source's client.
	clients := map[string]*http.Client{}
	get := func(source, password string) int {
		c := clients[source]
		if c == nil {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
			c = &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
			t.Cleanup(c.CloseIdleConnections)
			clients[source] = c
		}
		req, err := http.NewRequestWithContext(probetest.Context(t), http.MethodGet, metrics, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("prometheus", password)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	before := processCPU(t, pid)
	if code := get("127.0.0.1", "scrape-secret"); code != http.StatusOK {
		t.Fatalf("the right password: %d", code)
	}
	// One bcrypt, of the right password: the unit of what the flood may
	// cost (a tick is 10 ms).
	hashCost := max(processCPU(t, pid)-before, 50*time.Millisecond)

	before = processCPU(t, pid)
	codes := map[int]int{}
	for i := range 100 {
		codes[get("127.0.0.1", fmt.Sprintf("guess-%d", i))]++
	}
	spent := processCPU(t, pid) - before
	t.Logf("100 wrong passwords: %v, probed's CPU %v (a bcrypt: %v)", codes, spent, hashCost)
	// The budget is 5 at once (the right password took one), and one more
	// every 5 s while the flood lasts.
	if codes[http.StatusUnauthorized] > 6 || codes[http.StatusTooManyRequests] < 90 || codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != 100 {
		t.Errorf("100 wrong passwords answered %v; want at most 6 checked (401), the rest refused unchecked (429)", codes)
	}
	if spent > 20*hashCost {
		t.Errorf("100 wrong passwords cost probed %v of CPU, more than 20 bcrypts (%v each)", spent, hashCost)
	}
	if code := get("127.0.0.1", "scrape-secret"); code != http.StatusOK {
		t.Errorf("the right password, known, from the flooded address: %d, want 200", code)
	}
	if code := get("127.0.0.2", "guess"); code != http.StatusUnauthorized {
		t.Errorf("a wrong password from another address: %d, want 401 (its own budget)", code)
	}
	if code := get("127.0.0.2", "scrape-secret"); code != http.StatusOK {
		t.Errorf("the right password from another address: %d, want 200", code)
	}
	req, _ := http.NewRequestWithContext(probetest.Context(t), http.MethodGet, metrics, nil)
	req.SetBasicAuth("prometheus", "scrape-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), fmt.Sprintf("netprobe_limit_refusals_total{limit=\"basic_auth\"} %d\n", codes[http.StatusTooManyRequests])) {
		t.Errorf("no netprobe_limit_refusals_total{limit=\"basic_auth\"} %d in\n%s", codes[http.StatusTooManyRequests], b)
	}

	// Many sources, each within its own budget: all of them together get
	// a handful of hashes a second, not each its five. (Before, 40
	// addresses of 5 guesses cost 200 bcrypts, 11.6 s of CPU.)
	codes = map[int]int{}
	before = processCPU(t, pid)
	for i := range 40 {
		for range 5 {
			codes[get(fmt.Sprintf("127.0.1.%d", i+1), "guess")]++
		}
	}
	spent = processCPU(t, pid) - before
	t.Logf("40 addresses of 5 wrong passwords: %v, probed's CPU %v", codes, spent)
	if checked := codes[http.StatusUnauthorized]; checked > 20 || checked+codes[http.StatusTooManyRequests] != 200 {
		t.Errorf("200 wrong passwords from 40 addresses answered %v; want at most 20 checked (401), the rest refused unchecked (429)", codes)
	}
	if spent > 30*hashCost {
		t.Errorf("200 wrong passwords from 40 addresses cost probed %v of CPU, more than 30 bcrypts (%v each)", spent, hashCost)
	}
	if code := get("127.0.0.1", "scrape-secret"); code != http.StatusOK {
		t.Errorf("the right password, known, after the flood: %d, want 200", code)
	}
}

// TestDrainCutsScrapes sends SIGTERM with two scrapes whose probes never
// end, a Fetch waiting for a line and a Connect to an address that never
// answers, and a grace period of 1 s: as it ends, both are cut and answer
// 503 in full (not an empty reply), and probed exits 0.
func TestDrainCutsScrapes(t *testing.T) {
	t.Parallel()
	silent := probetest.Listen(t, "127.0.0.1:0", nil)
	port, release, err := probetest.Blackhole(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--shutdown-grace=1s",
		"--modules-file="+writeFile(t, "modules.yml", waitModules)))
	base := "http://" + p.MetricsAddr + "/probe?"
	timeout := http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"30"}}
	fetch := startScrape(t, base+url.Values{"module": {"wait"}, "target": {silent.Addr()}}.Encode(), timeout)
	waitAccepted(t, silent, 1)
	connect := startScrape(t, base+url.Values{"module": {"connect"}, "target": {fmt.Sprintf("127.0.0.1:%d", port)}}.Encode(), timeout)
	// The Connect is under way once two probes are in flight.
	waitInFlight(t, p, 2)
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]<-chan scrapeResult{"Fetch": fetch, "Connect": connect} {
		r := <-s
		if r.err != nil || r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "the probe was cut short") {
			t.Errorf("the %s scrape as the grace ended: %d, %v\n%s", name, r.code, r.err, r.body)
		}
	}
	waitExit(t, p)
}

// TestMetricsUnsentBody plays a client that announces a body and never
// sends it, on every route, with and without credentials: no route reads
// a body, so each is answered at once and its connection closed, instead
// of waiting out the read timeout (70 s by default) to discard the body
// with the connection busy and so beyond eviction: two sources could
// otherwise hold every place of the metrics listener.
func TestMetricsUnsentBody(t *testing.T) {
	t.Parallel()
	p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0", "--metrics-addr=127.0.0.1:0",
		"--tokens-file="+tokensFile(t)))
	for _, tc := range []struct {
		name, request string
		want          int
	}{
		{"reload, no token", "POST /-/reload HTTP/1.1\r\nHost: probed\r\nContent-Length: 100000\r\n\r\n", http.StatusUnauthorized},
		{"reload, a token", "POST /-/reload HTTP/1.1\r\nHost: probed\r\nAuthorization: Bearer " + aliceToken + "\r\nContent-Length: 100000\r\n\r\n", http.StatusOK},
		{"a chunked probe", "GET /probe?target=127.0.0.1:1 HTTP/1.1\r\nHost: probed\r\nTransfer-Encoding: chunked\r\n\r\n", http.StatusUnauthorized},
		{"health", "GET /healthz HTTP/1.1\r\nHost: probed\r\nContent-Length: 10\r\n\r\n", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, "127.0.0.1", p.MetricsAddr, 1)[0]
			c.SetDeadline(time.Now().Add(probetest.Timeout))
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want || !resp.Close {
				t.Errorf("%d, closing %v; want %d and the connection closed", resp.StatusCode, resp.Close, tc.want)
			}
			if n, err := br.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Errorf("after the answer: %d bytes, %v; want the connection closed (EOF)", n, err)
			}
		})
	}
}
