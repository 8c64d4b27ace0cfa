package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/probetest"
)

// server is a probed under measurement, and a client of it.
type server struct {
	*probetest.Probed
	client *client.Client
}

// unlimited are probed's limits raised out of the way of the load: the
// defaults would rightly refuse one caller this much.
var unlimited = []string{
	"--rate=1e9", "--burst=1000000000",
	"--max-in-flight=1000000", "--max-in-flight-per-caller=1000000",
	"--max-streams-per-connection=1000000", "--max-reads-per-caller=1000000",
	"--max-sweeps-per-caller=1000000", "--max-sweeps=1000000", "--max-connections-per-source=1000000", "--max-connections=1000000",
}

// probedBin is the probed the bench runs, and how.
type probedBin struct {
	path string
	// gomaxprocs, when not 0, is probed's GOMAXPROCS (-probed-gomaxprocs).
	gomaxprocs int
}

// prepare sets cmd's environment for running b: the bench's own, and
// GOMAXPROCS when b has one.
func (b probedBin) prepare(cmd *exec.Cmd) *exec.Cmd {
	if b.gomaxprocs != 0 {
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(b.gomaxprocs))
	}
	return cmd
}

// startProbed runs probed on loopback, unlimited, with its default
// logging: one audit line per probe.
func startProbed(bin probedBin, extra ...string) (*server, error) {
	args := append(append([]string{"--listen=127.0.0.1:0"}, unlimited...), extra...)
	p, err := probetest.Launch(bin.prepare(exec.Command(bin.path, args...)))
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(p.Addr)
	if err != nil {
		p.Stop()
		return nil, err
	}
	return &server{Probed: p, client: c}, nil
}

func (s *server) stop() {
	s.client.Close()
	s.Stop()
}

// stats is what the process holds at one moment.
type stats struct {
	rssKiB, peakKiB int64
	fds             int
	goroutines      float64
	// stackMiB and heapMiB are the Go runtime's own accounts.
	stackMiB, heapMiB float64
}

func (s *server) stats(ctx context.Context) (stats, error) {
	var st stats
	// Scrape first: the scrape's own connection stays open, and should
	// count in every reading alike.
	m, err := s.metrics(ctx)
	if err != nil {
		return st, err
	}
	st.goroutines = m["go_goroutines"]
	st.stackMiB = m["go_memstats_stack_inuse_bytes"] / (1 << 20)
	st.heapMiB = m["go_memstats_heap_inuse_bytes"] / (1 << 20)
	err = st.readProc(s.Cmd.Process.Pid)
	return st, err
}

// readProc reads what /proc says of process pid: its resident set, now
// and at its peak, and its open descriptors.
func (st *stats) readProc(pid int) error {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			st.rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			st.peakKiB, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return err
	}
	st.fds = len(fds)
	return nil
}

// get GETs url, and returns the body of a 200 answer.
func get(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return resp.Body, nil
}

// metrics scrapes probed and sums each family's series.
func (s *server) metrics(ctx context.Context) (map[string]float64, error) {
	body, err := get(ctx, "http://"+s.MetricsAddr+"/metrics")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.Counter != nil:
				out[name] += m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[name] += m.GetGauge().GetValue()
			case m.Untyped != nil:
				out[name] += m.GetUntyped().GetValue()
			}
		}
	}
	return out, nil
}
