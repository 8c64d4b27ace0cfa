package audit

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/service"
)

// Hops of the paths below.
var (
	r1     = &netprobev1.Hop{Ttl: 1, Address: "198.18.1.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED, IcmpType: 11, Sent: 1, Answered: 1}
	silent = func(ttl uint32) *netprobev1.Hop {
		return &netprobev1.Hop{Ttl: ttl, Answer: netprobev1.HopAnswer_HOP_ANSWER_NONE, Sent: 1}
	}
	dropped  = &netprobev1.Path{Hops: []*netprobev1.Hop{r1, silent(2), silent(3)}, End: netprobev1.PathEnd_PATH_END_SILENCE}
	rejected = &netprobev1.Path{Hops: []*netprobev1.Hop{r1, {Ttl: 2, Address: "198.18.2.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_UNREACHABLE, IcmpType: 3, IcmpCode: 13, Sent: 1, Answered: 1}},
		End: netprobev1.PathEnd_PATH_END_UNREACHABLE}
)

// TestStoppedAfter says where each kind of path stopped, in one bounded
// line: an address that is not one (a report is data, whoever made it)
// is left out, and a zone is dropped.
func TestStoppedAfter(t *testing.T) {
	for _, tc := range []struct {
		name string
		path *netprobev1.Path
		want string
	}{
		{"no trace", nil, ""},
		{"a trace without hops (unsupported)", &netprobev1.Path{End: netprobev1.PathEnd_PATH_END_UNSUPPORTED}, ""},
		{"dropped at r2", dropped, "198.18.1.1 (hop 1); nothing beyond it"},
		{"rejected at r2", rejected, "198.18.2.1 (hop 2), which answered unreachable (ICMP type 3, code 13)"},
		{"reached, refused", &netprobev1.Path{Hops: []*netprobev1.Hop{r1, {Ttl: 2, Address: "2001:db8::4", Answer: netprobev1.HopAnswer_HOP_ANSWER_RST, Sent: 1, Answered: 1}},
			Reached: true, End: netprobev1.PathEnd_PATH_END_REACHED}, "2001:db8::4 (hop 2): the target answered RST"},
		{"reached over UDP, nothing listens", &netprobev1.Path{Hops: []*netprobev1.Hop{r1, {Ttl: 2, Address: "198.18.4.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_PORT_UNREACHABLE, IcmpType: 3, IcmpCode: 3, Sent: 1, Answered: 1}},
			Reached: true, End: netprobev1.PathEnd_PATH_END_REACHED}, "198.18.4.1 (hop 2): the target answered port unreachable (ICMP type 3, code 3)"},
		{"reached over UDP, a reply", &netprobev1.Path{Hops: []*netprobev1.Hop{r1, {Ttl: 2, Address: "198.18.4.1", Answer: netprobev1.HopAnswer_HOP_ANSWER_DATAGRAM, Sent: 1, Answered: 1}},
			Reached: true, End: netprobev1.PathEnd_PATH_END_REACHED}, "198.18.4.1 (hop 2): the target answered a datagram"},
		{"an answer unknown here", &netprobev1.Path{Hops: []*netprobev1.Hop{{Ttl: 1, Address: "198.18.4.1", Answer: netprobev1.HopAnswer(99), Sent: 1, Answered: 1}},
			Reached: true, End: netprobev1.PathEnd_PATH_END_REACHED}, "198.18.4.1 (hop 1): the target answered 99"},
		{"no hop answered", &netprobev1.Path{Hops: []*netprobev1.Hop{silent(1), silent(2)}, End: netprobev1.PathEnd_PATH_END_SILENCE}, "no hop answered, of 2 tried"},
		{"max hops", &netprobev1.Path{Hops: []*netprobev1.Hop{r1, r1}, End: netprobev1.PathEnd_PATH_END_MAX_HOPS}, "198.18.1.1 (hop 1); nothing reached the target within 2 hops"},
		{"out of time", &netprobev1.Path{Hops: []*netprobev1.Hop{r1, silent(2)}, End: netprobev1.PathEnd_PATH_END_TIMEOUT}, "198.18.1.1 (hop 1); the trace ran out of time"},
		{"an address that is markup", &netprobev1.Path{Hops: []*netprobev1.Hop{{Ttl: 1, Address: "<script>" + strings.Repeat("x", 10000), Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED}},
			End: netprobev1.PathEnd_PATH_END_SILENCE}, "hop 1; nothing beyond it"},
		{"a zone", &netprobev1.Path{Hops: []*netprobev1.Hop{{Ttl: 1, Address: "fe80::1%" + strings.Repeat("z", 10000), Answer: netprobev1.HopAnswer_HOP_ANSWER_TIME_EXCEEDED}},
			End: netprobev1.PathEnd_PATH_END_SILENCE}, "fe80::1 (hop 1); nothing beyond it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := StoppedAfter(tc.path); got != tc.want {
				t.Errorf("%q, want %q", got, tc.want)
			}
		})
	}
}

// TestObserveStoppedAfter gives a failed probe's audit line, and its
// entry among the targets failing now, where its trace stopped; a probe
// that succeeded says nothing of its path.
func TestObserveStoppedAfter(t *testing.T) {
	var log bytes.Buffer
	a := New(slog.New(slog.NewTextHandler(&log, nil)), prometheus.NewRegistry(), nil)
	target := &netprobev1.Target{Host: "198.18.4.1", Port: 82}
	timeout := &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_CONNECT, Reason: netprobev1.Reason_REASON_TIMEOUT}
	a.Observe(context.Background(), service.Report{Method: "Connect", Target: target, Error: timeout, Connect: &netprobev1.ConnectResponse{Error: timeout, Path: dropped}, Path: dropped})
	if want := `stopped_after="198.18.1.1 (hop 1); nothing beyond it"`; !strings.Contains(log.String(), want) {
		t.Errorf("the audit line lacks %s:\n%s", want, log.String())
	}
	if now, _ := a.Failing(); len(now) != 1 || now[0].Last.StoppedAfter != "198.18.1.1 (hop 1); nothing beyond it" {
		t.Errorf("failing now: %+v", now)
	}
	// A Fetch's path is its summary's.
	log.Reset()
	noMatch := &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_EXPECT, Reason: netprobev1.Reason_REASON_NO_MATCH}
	a.Observe(context.Background(), service.Report{Method: "Fetch", Target: target, Error: noMatch, Connect: &netprobev1.ConnectResponse{PeerAddress: "198.18.4.1:82"},
		Summary: &netprobev1.FetchSummary{Error: noMatch, Path: dropped}, Path: dropped})
	if want := `stopped_after="198.18.1.1 (hop 1); nothing beyond it"`; !strings.Contains(log.String(), want) {
		t.Errorf("the audit line of a Fetch lacks %s:\n%s", want, log.String())
	}
	log.Reset()
	a.Observe(context.Background(), service.Report{Method: "Connect", Target: target, Connect: &netprobev1.ConnectResponse{PeerAddress: "198.18.4.1:82", Path: rejected}, Path: rejected})
	if strings.Contains(log.String(), "stopped_after") || a.Recent()[0].StoppedAfter != "" {
		t.Errorf("a probe that succeeded says where its path stopped:\n%s", log.String())
	}
}
