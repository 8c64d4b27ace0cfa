package probemetrics

import (
	"hash/fnv"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
)

// TestIPHash checks probe_ip_addr_hash against the values Debian's
// blackbox_exporter 0.23 gives for the same addresses (scraped by hand;
// cmd/probed's TestSeriesParity compares them live).
func TestIPHash(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want float64
	}{
		{"127.0.0.1", 3668918509},
		{"127.0.0.2", 3618585652},
		{"127.0.0.3", 3635363271},
		{"::1", 1751717746},
	} {
		if got := ipHash(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("ipHash(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// TestTraceMetrics gives a trace's metrics: Grafana's route hash (FNV-1
// of the answering addresses, a silent TTL adding nothing), the loss as a
// fraction of every probe sent, the last TTL that answered, and one
// hop_info a TTL; none without hops.
func TestTraceMetrics(t *testing.T) {
	path := &netprobev1.Path{Hops: []*netprobev1.Hop{
		{Ttl: 1, Address: "198.18.1.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED, Sent: 3, Answered: 2,
			Rtts: []*durationpb.Duration{durationpb.New(time.Millisecond), durationpb.New(3 * time.Millisecond)}},
		{Ttl: 2, Answer: netprobev1.HopAnswer_HOP_ANSWER_NONE, Sent: 3},
		{Ttl: 3, Address: "198.18.3.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE, Sent: 2, Answered: 2},
	}, End: netprobev1.PathEnd_PATH_END_UNREACHABLE}
	h := fnv.New32()
	h.Write([]byte("198.18.1.1198.18.3.1"))
	gather := func(path *netprobev1.Path) map[string]float64 {
		r := New(&modules.Module{Name: "m", Prober: "tcp"}, false)
		r.Connected(&netprobev1.ConnectResponse{Path: path, Error: &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT}})
		families, err := r.Registry(time.Second, slog.New(slog.DiscardHandler)).Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, f := range families {
			if !strings.HasPrefix(f.GetName(), "probe_traceroute_") {
				continue
			}
			for _, m := range f.GetMetric() {
				name := f.GetName()
				for _, l := range m.GetLabel() {
					name += "," + l.GetName() + "=" + l.GetValue()
				}
				got[name] = m.GetGauge().GetValue()
			}
		}
		return got
	}
	want := map[string]float64{
		"probe_traceroute_total_hops":          3,
		"probe_traceroute_packet_loss_percent": 4.0 / 8,
		"probe_traceroute_route_hash":          float64(h.Sum32()),
		"probe_traceroute_last_answered_hop":   3,
		"probe_traceroute_reached":             0,
		"probe_traceroute_hop_info,address=198.18.1.1,answer=HOP_ANSWER_TIME_EXCEEDED,ttl=1": 1,
		"probe_traceroute_hop_info,address=,answer=HOP_ANSWER_NONE,ttl=2":                    1,
		"probe_traceroute_hop_info,address=198.18.3.1,answer=HOP_ANSWER_UNREACHABLE,ttl=3":   1,
		"probe_traceroute_hop_rtt_seconds,ttl=1":                                             0.002,
	}
	if diff := cmp.Diff(want, gather(path)); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	if got := gather(&netprobev1.Path{End: netprobev1.PathEnd_PATH_END_UNSUPPORTED}); len(got) != 0 {
		t.Errorf("a trace without hops gives %v", got)
	}
}
