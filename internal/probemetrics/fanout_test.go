package probemetrics

import (
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
)

// TestFanoutNodes feeds a fan-out's result what its nodes could send,
// misconfigured or hostile: two nodes of one name, the entry among them or
// not, a node that sends a result many times, a name that is not UTF-8 or
// holds escape codes. Each node's series stay its own, one a node, labelled
// as client.VantageNames names it whichever node answered first, and the
// scrape gathers.
func TestFanoutNodes(t *testing.T) {
	m := &modules.Module{Name: "tcp_connect", Prober: "tcp"}
	ok := func(node, addr string) *netprobev1.SweepResponse {
		return &netprobev1.SweepResponse{Vantage: &netprobev1.Vantage{Node: node, Address: addr},
			Connect: &netprobev1.ConnectResponse{PeerAddress: "127.0.0.1:80", TotalDuration: durationpb.New(time.Millisecond)}}
	}
	refused := func(node, addr string) *netprobev1.SweepResponse {
		r := ok(node, addr)
		r.Connect.Error = &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_REFUSED}
		return r
	}
	for _, tc := range []struct {
		name string
		sent []*netprobev1.SweepResponse
		want map[string]float64
	}{
		{"two nodes of one name", []*netprobev1.SweepResponse{ok("n1", ""), refused("n1", "10.0.0.2:7070")},
			map[string]float64{`{}`: 0, `{vantage="n1"}`: 1, `{vantage="n1@10.0.0.2:7070"}`: 0}},
		{"two peers of one name, the later first", []*netprobev1.SweepResponse{refused("vm", "10.0.0.3:7070"), ok("vm", "10.0.0.2:7070")},
			map[string]float64{`{}`: 0, `{vantage="vm@10.0.0.2:7070"}`: 1, `{vantage="vm@10.0.0.3:7070"}`: 0}},
		{"a node that sends again", []*netprobev1.SweepResponse{ok("n2", "10.0.0.2:7070"), refused("n2", "10.0.0.2:7070"), refused("n2", "10.0.0.2:7070")},
			map[string]float64{`{}`: 1, `{vantage="n2"}`: 1}},
		{"a name that is not UTF-8", []*netprobev1.SweepResponse{ok("n\xff", "10.0.0.3:7070")},
			map[string]float64{`{}`: 1, "{vantage=\"n\uFFFD\"}": 1}},
		{"a name with escape codes", []*netprobev1.SweepResponse{ok("\x1b[2Jn1", "10.0.0.3:7070")},
			map[string]float64{`{}`: 1, "{vantage=\"\uFFFD[2Jn1\"}": 1}},
		{"names that print alike from one address", []*netprobev1.SweepResponse{ok("n\x00", "10.0.0.2:7070"), refused("n\x01", "10.0.0.2:7070")},
			map[string]float64{`{}`: 0, "{vantage=\"n\uFFFD\"}": 1, "{vantage=\"n\uFFFD#2\"}": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFanout(m)
			f.Whole().Addressed("127.0.0.1")
			nodes := map[string]bool{}
			for _, r := range tc.sent {
				f.Keep(r)
				nodes[r.GetVantage().GetNode()+r.GetVantage().GetAddress()] = true
			}
			f.Keep(&netprobev1.SweepResponse{Fanout: &netprobev1.FanoutSummary{Asked: uint32(len(nodes)), Answered: uint32(len(nodes))}})
			families, err := f.Exposition(time.Second, slog.New(slog.DiscardHandler)).Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, fam := range families {
				if fam.GetName() != "probe_success" {
					continue
				}
				for _, s := range fam.GetMetric() {
					got[labelsOf(s)] = s.GetGauge().GetValue()
				}
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("probe_success %v, want %v", got, tc.want)
			}
		})
	}
}

func labelsOf(m *dto.Metric) string {
	s := "{"
	for i, l := range m.GetLabel() {
		if i > 0 {
			s += ","
		}
		s += l.GetName() + "=\"" + l.GetValue() + "\""
	}
	return s + "}"
}

// TestFanoutGather holds a fan-out's Exposition to what a registry gathers
// holding the same metrics, each node's registered with its vantage
// label through WrapRegistererWith: nodes that succeeded, failed after
// attempts, failed as a whole, and a target no node could probe.
func TestFanoutGather(t *testing.T) {
	m := &modules.Module{Name: "tcp_connect", Prober: "tcp"}
	d := durationpb.New
	node := func(name string, c *netprobev1.ConnectResponse) *netprobev1.SweepResponse {
		return &netprobev1.SweepResponse{Vantage: &netprobev1.Vantage{Node: name}, Connect: c}
	}
	refused := &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_REFUSED, Errno: "ECONNREFUSED"}
	for _, tc := range []struct {
		name string
		fill func(f *Fanout)
	}{
		{"nodes that succeeded, failed, and failed as a whole", func(f *Fanout) {
			f.Whole().Addressed("127.0.0.1")
			// TLS's version label sorts after the vantage.
			f.Keep(node("n2", &netprobev1.ConnectResponse{PeerAddress: "127.0.0.1:80", ConnectDuration: d(time.Millisecond), TotalDuration: d(time.Millisecond),
				Attempts: []*netprobev1.DialAttempt{{Address: "127.0.0.1:80"}}, Tls: &netprobev1.TlsResult{Version: "TLS 1.3", HandshakeDuration: d(time.Millisecond)}}))
			f.Keep(node("n1", &netprobev1.ConnectResponse{ConnectDuration: d(time.Millisecond), TotalDuration: d(time.Millisecond),
				Attempts: []*netprobev1.DialAttempt{{Address: "127.0.0.1:80", Error: refused}}, Error: refused}))
			f.Keep(&netprobev1.SweepResponse{Vantage: &netprobev1.Vantage{Node: "n3"}, VantageError: &netprobev1.VantageError{Code: "UNAVAILABLE"}})
			f.Keep(&netprobev1.SweepResponse{Fanout: &netprobev1.FanoutSummary{Asked: 3, Answered: 2, Failed: 1}})
		}},
		{"a target no node could probe", func(f *Fanout) {
			f.Whole().Fail(&netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_RESOLVE, Reason: netprobev1.Reason_REASON_NO_SUCH_HOST})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFanout(m)
			tc.fill(f)
			parts := f.parts(time.Second, slog.New(slog.DiscardHandler))
			reg := prometheus.NewRegistry()
			for _, p := range parts {
				r := prometheus.Registerer(reg)
				if p.vantage != "" {
					r = prometheus.WrapRegistererWith(prometheus.Labels{vantageLabel: p.vantage}, reg)
				}
				r.MustRegister(p)
			}
			sameAsRegistry(t, reg, parts...)
		})
	}
}
