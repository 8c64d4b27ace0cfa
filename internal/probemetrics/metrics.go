package probemetrics

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// blackbox_exporter's metrics: its names, help and labels (those of
// Debian's 0.23, which cmd/probed's TestSeriesParity scrapes beside
// probed).
var (
	metricSuccess    = newMetric("probe_success", "Displays whether or not the probe was a success")
	metricDuration   = newMetric("probe_duration_seconds", "Returns how long the probe took to complete in seconds")
	metricDNS        = newMetric("probe_dns_lookup_time_seconds", "Returns the time taken for probe dns lookup in seconds")
	metricIPProtocol = newMetric("probe_ip_protocol", "Specifies whether probe ip protocol is IP4 or IP6")
	metricIPHash     = newMetric("probe_ip_addr_hash", "Specifies the hash of IP address. It's useful to detect if the IP address changes.")
	metricRegex      = newMetric("probe_failed_due_to_regex", "Indicates if probe failed due to regex")
	metricTLSVersion = newMetric("probe_tls_version_info", "Returns the TLS version used or NaN when unknown", "version")
	metricEarliest   = newMetric("probe_ssl_earliest_cert_expiry", "Returns last SSL chain expiry in unixtime")
	metricLastChain  = newMetric("probe_ssl_last_chain_expiry_timestamp_seconds", "Returns last SSL chain expiry in timestamp")
	metricLastInfo   = newMetric("probe_ssl_last_chain_info", "Contains SSL leaf certificate information", "fingerprint_sha256", "issuer", "subject", "subjectalternative")
	expectInfoHelp   = "Explicit content matched"
	// The icmp prober's.
	metricICMPDuration = newMetric("probe_icmp_duration_seconds", "Duration of icmp request by phase", "phase")
	metricICMPHopLimit = newMetric("probe_icmp_reply_hop_limit", "Replied packet hop limit (TTL for ipv4)")
)

// expectInfoMetric is blackbox_exporter's probe_expect_info, whose labels
// each module names.
const expectInfoMetric = "probe_expect_info"

// Addition is a metric of netprobe's /probe that blackbox_exporter's
// /probe does not give: netprobe's own, or one of blackbox_exporter's
// that netprobe gives in more cases (Also). docs/prometheus.md's table of
// them is made from Additions, and cmd/probed's TestSeriesParity accepts
// these, and nothing else, beyond blackbox_exporter's series.
type Addition struct {
	Name   string
	Labels []string
	// Doc says what it is, in docs/prometheus.md's words.
	Doc string
	// Also marks a metric of blackbox_exporter's, which netprobe gives in
	// more cases than it does (Doc says which).
	Also   bool
	metric *metric
}

func addition(name, help, doc string, labels ...string) *Addition {
	return &Addition{Name: name, Labels: labels, Doc: doc, metric: newMetric(name, help, labels...)}
}

// metric is one of the metrics /probe gives: the description a registry
// takes, and what Exposition gives beside its samples.
type metric struct {
	name, help string
	labels     []string
	desc       *prometheus.Desc
	// sorted are the indexes of labels in the order of their names, the
	// order a registry gives a metric's labels in.
	sorted []int
}

func newMetric(name, help string, labels ...string) *metric {
	m := &metric{name: name, help: help, labels: labels, desc: prometheus.NewDesc(name, help, labels, nil), sorted: make([]int, len(labels))}
	for i := range labels {
		m.sorted[i] = i
	}
	slices.SortFunc(m.sorted, func(a, b int) int { return strings.Compare(labels[a], labels[b]) })
	return m
}

// netprobe's own metrics.
var (
	failureInfo = addition("probe_failure_info", "Why the probe failed: its stage, reason and errno, as netprobe_probes_total names them.",
		"1 on failure: which stage failed and why, named as in `netprobe_probes_total` (`STAGE_CONNECT`, `REASON_REFUSED`, `ECONNREFUSED`); see [errors](errors.md), and [section 2](#2-prometheus) for a target that cannot be probed at all",
		"stage", "reason", "errno")
	phaseDuration = addition("probe_phase_duration_seconds", "How long each phase of the probe took: resolve, connect, tls, first_byte (from the start) and total.",
		"`resolve`, `connect`, `tls`, `first_byte` and `total`, for TCP too", "phase")
	attempts = addition("probe_attempts", "The probe's connection attempts, by result: connected, abandoned, or the reason of the failure.",
		"the connection attempts of this probe (a gauge: each scrape is a probe of its own): `connected`, `abandoned`, or the reason of the failure", "result")
	tlsVerified = addition("probe_tls_verified", "Whether the peer's chain verified (netprobe reports its expiry either way).",
		"whether the peer's chain verified")
	tcpRTT = addition("probe_tcp_rtt_seconds", "The kernel's smoothed round-trip time of the connection (TCP_INFO), at its end.",
		"the kernel's smoothed round-trip time (TCP_INFO) at the end of the connection (Linux)")
	tcpRetransmits = addition("probe_tcp_retransmits", "The segments the kernel sent again on the connection (TCP_INFO), at its end.",
		"the segments the kernel sent again on the connection (TCP_INFO, Linux)")
	leafCertificate = addition("probe_netprobe_leaf_certificate_info", "The leaf certificate's facts that probe_ssl_last_chain_info has not; fingerprint_sha256 joins the two.",
		"the leaf certificate's serial number (hexadecimal) and IP addresses, which `probe_ssl_last_chain_info` has not; `fingerprint_sha256` joins the two",
		"fingerprint_sha256", "serialnumber", "ipaddresses")
	// A module's trace (netprobe.trace): Grafana synthetic monitoring's
	// traceroute names, and netprobe's own beside them. Their series are
	// bounded by the trace's max_hops, 64 at most.
	traceHops = addition("probe_traceroute_total_hops", "Total hops to reach a traceroute destination: the TTLs the trace tried.",
		"with `netprobe.trace`: the TTLs the trace tried, silent ones at the end included, as Grafana synthetic monitoring's traceroute check counts them")
	traceLoss = addition("probe_traceroute_packet_loss_percent", "Overall percentage of packet loss during the traceroute, as a fraction from 0 to 1.",
		"with `netprobe.trace`: the trace's probes that drew no answer, of all it sent, as a fraction from 0 to 1 (as Grafana synthetic monitoring's traceroute check gives it, despite its name)")
	traceHash = addition("probe_traceroute_route_hash", "Hash of all the hosts in a traceroute path. Used to determine route volatility.",
		"with `netprobe.trace`: FNV-1 (32 bits) of the addresses that answered each TTL, in order, as Grafana synthetic monitoring's traceroute check makes it: it changes when the path does")
	traceLast = addition("probe_traceroute_last_answered_hop", "The TTL of the last hop that answered the trace: where the path stopped when the target did not answer; 0 when no hop answered.",
		"with `netprobe.trace`: the TTL of the last hop that answered, where the path stopped when the target did not answer; 0 when none did")
	traceReached = addition("probe_traceroute_reached", "Whether the trace reached the target (its SYN-ACK or RST).",
		"with `netprobe.trace`: 1 when the target itself answered the trace (SYN-ACK or RST)")
	traceHop = addition("probe_traceroute_hop_info", "Each TTL of the trace: the address that answered it (empty when none did) and what answered.",
		"with `netprobe.trace`: 1 for each TTL tried, with the address that answered it (empty when none did) and what answered (`HOP_ANSWER_TIME_EXCEEDED`, `HOP_ANSWER_UNREACHABLE`, `HOP_ANSWER_SYN_ACK`, `HOP_ANSWER_RST`, `HOP_ANSWER_NONE`)",
		"ttl", "address", "answer")
	traceHopRTT = addition("probe_traceroute_hop_rtt_seconds", "The mean round-trip time of the answered probes of each TTL of the trace.",
		"with `netprobe.trace`: the mean round-trip time of each TTL's answered probes; none for a TTL that no probe answered", "ttl")
	// A fan-out's (from=): see Fanout.
	fanoutAsked = addition("probe_fanout_nodes_asked", "The nodes of the fleet the probe was sent to (from=).",
		"with `from=`: the nodes of the fleet the probe was sent to ([section 7](#7-from-every-node-of-a-fleet))")
	fanoutSucceeded = addition("probe_fanout_nodes_succeeded", "The nodes whose probe succeeded (from=).",
		"with `from=`: the nodes whose probe succeeded (their `probe_success{vantage}` is 1): alert on `probe_fanout_nodes_succeeded < N` for a quorum of N")
	fanoutFailed = addition("probe_fanout_nodes_failed", "The nodes that failed as a whole, with no probe to report (from=).",
		"with `from=`: the nodes that failed as a whole (unreachable, late, refusing the caller): they have no `probe_success{vantage}`")
	fanoutSkipped = addition("probe_fanout_nodes_skipped", "The nodes the selector chose past its limit, not asked (from=, limit=).",
		"with `from=`: the nodes the selector chose past its limit (`limit=`, 50 by default), which were not asked")
	nodeFailure = addition("probe_fanout_node_failure_info", "Why a node of the fan-out failed as a whole: the gRPC code it or its connection gave (from=).",
		"with `from=`: 1 for each node that failed as a whole, with the gRPC code it or its connection gave (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `PERMISSION_DENIED`, ...)",
		"vantage", "code")
)

// Additions are the metrics netprobe's /probe gives beyond
// blackbox_exporter's.
var Additions = []*Addition{
	failureInfo, phaseDuration, attempts, tlsVerified, tcpRTT, tcpRetransmits, leafCertificate,
	traceHops, traceLoss, traceHash, traceLast, traceReached, traceHop, traceHopRTT,
	fanoutAsked, fanoutSucceeded, fanoutFailed, fanoutSkipped, nodeFailure,
	{Name: "probe_*", Labels: []string{"vantage"}, Doc: "with `from=`: every metric of a node's probe, as one probe gives it, labelled with the node's name"},
	{Name: "probe_ssl_earliest_cert_expiry", Also: true, Doc: "also when the chain did not verify (an expired certificate, an unknown authority), which blackbox_exporter does not give"},
	{Name: "probe_tls_version_info", Labels: []string{"version"}, Also: true, Doc: "also when the chain did not verify"},
	{Name: "probe_ssl_last_chain_info", Labels: []string{"fingerprint_sha256", "issuer", "subject", "subjectalternative"}, Also: true, Doc: "also when the chain did not verify: the leaf the peer sent"},
}

// Markdown is the table of Additions in docs/prometheus.md.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| metric | |\n|---|---|\n")
	for _, a := range Additions {
		name := a.Name
		if len(a.Labels) > 0 {
			name += "{" + strings.Join(a.Labels, ",") + "}"
		}
		fmt.Fprintf(&b, "| `%s` | %s |\n", name, a.Doc)
	}
	return b.String()
}

// probeMetrics collects one probe's metrics, made once: an Exposition or
// the registry of the scrape (debug=true) gives them.
type probeMetrics struct {
	samples []sample
	// vantage, when set, is the vantage label a fan-out gives each of
	// samples: a node's series.
	vantage string
}

// sample is one of a probe's metrics: a gauge, its value and its label
// values, in the order of its metric's labels.
type sample struct {
	of     *metric
	value  float64
	values []string
}

// Describe describes nothing: the metrics are fixed, above, and the
// registry checks them as it gathers.
func (p *probeMetrics) Describe(chan<- *prometheus.Desc) {}

func (p *probeMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, s := range p.samples {
		ch <- prometheus.MustNewConstMetric(s.of.desc, prometheus.GaugeValue, s.value, s.values...)
	}
}

// gauge adds a gauge, its label values made valid UTF-8 (each run of
// bytes that are not becomes U+FFFD), which Prometheus requires: they
// carry what targets sent (an expect's groups, a certificate's names),
// which may be any bytes.
func (p *probeMetrics) gauge(m *metric, v float64, labels ...string) {
	if len(labels) != len(m.labels) {
		panic(fmt.Sprintf("probemetrics: %s has %d labels, given %d values", m.name, len(m.labels), len(labels)))
	}
	valid := make([]string, len(labels))
	for i, l := range labels {
		valid[i] = strings.ToValidUTF8(l, "\uFFFD")
	}
	p.samples = append(p.samples, sample{of: m, value: v, values: valid})
}

// Registry gathers the probe's metrics: blackbox_exporter's, in the cases
// its tcp or icmp prober gives them, and netprobe's own. duration is the whole
// scrape's; logger gets the verdict.
func (r *Result) Registry(duration time.Duration, logger *slog.Logger) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.metrics(duration, logger))
	return reg
}

// Exposition is the probe's metrics, as Registry's registry gathers them.
func (r *Result) Exposition(duration time.Duration, logger *slog.Logger) *Exposition {
	return &Exposition{parts: []*probeMetrics{r.metrics(duration, logger)}}
}

// metrics are the probe's metrics, as Registry gathers them.
func (r *Result) metrics(duration time.Duration, logger *slog.Logger) *probeMetrics {
	p := &probeMetrics{}
	pe := r.Error()
	p.gauge(metricSuccess, b2f(r.Succeeded()))
	p.gauge(metricDuration, duration.Seconds())
	if r.module.Prober == "tcp" {
		// blackbox_exporter's tcp prober has it from the start: 1 only
		// when the peer closed without what an expect looked for.
		p.gauge(metricRegex, b2f(pe.GetStage() == netprobev1.Stage_STAGE_EXPECT && pe.GetReason() == netprobev1.Reason_REASON_NO_MATCH))
	}
	if r.addressed {
		// Once it has HOST and PORT, blackbox_exporter resolves HOST, and
		// has these even when it resolved nothing (0).
		p.gauge(metricDNS, r.connect.GetResolveDuration().AsDuration().Seconds())
		family, hash := 0.0, 0.0
		if ip := r.address(); ip.IsValid() {
			family, hash = 6, ipHash(ip)
			if ip.Is4() {
				family = 4
			}
		}
		p.gauge(metricIPProtocol, family)
		p.gauge(metricIPHash, hash)
	}
	if pe != nil {
		p.gauge(failureInfo.metric, 1, pe.GetStage().String(), pe.GetReason().String(), pe.GetErrno())
		logger.Error("probe failed", "stage", pe.GetStage(), "reason", pe.GetReason(), "errno", pe.GetErrno(), "address", pe.GetAddress(), "message", pe.GetMessage())
	} else {
		logger.Info("probe succeeded", "peer", r.connect.GetPeerAddress(), "duration", duration)
	}
	switch {
	case r.module.Prober == "icmp":
		p.echo(r)
	case r.connect != nil:
		p.connection(r)
	}
	return p
}

// echo adds an icmp module's metrics, as blackbox_exporter's icmp prober
// gives them: the three phases always, 0 for those the probe did not get
// to (resolve, when resolving failed), and the reply's hop limit when it
// succeeded. netprobe's phase and attempt metrics, a connection's, are
// not given.
func (p *probeMetrics) echo(r *Result) {
	c := r.connect
	resolve := 0.0
	if c != nil && r.Error().GetStage() != netprobev1.Stage_STAGE_RESOLVE {
		resolve = c.GetResolveDuration().AsDuration().Seconds()
	}
	p.gauge(metricICMPDuration, resolve, "resolve")
	p.gauge(metricICMPDuration, c.GetIcmp().GetSetupDuration().AsDuration().Seconds(), "setup")
	p.gauge(metricICMPDuration, c.GetIcmp().GetRtt().AsDuration().Seconds(), "rtt")
	if r.Succeeded() {
		p.gauge(metricICMPHopLimit, float64(c.GetIcmp().GetReplyTtl()))
	}
}

// connection adds the metrics of a probe that got as far as the probe
// service's report.
func (p *probeMetrics) connection(r *Result) {
	c := r.connect
	p.gauge(phaseDuration.metric, c.GetResolveDuration().AsDuration().Seconds(), "resolve")
	p.gauge(phaseDuration.metric, c.GetConnectDuration().AsDuration().Seconds(), "connect")
	total := c.GetTotalDuration().AsDuration()
	if s := r.summary; s != nil {
		total = s.GetTotalDuration().AsDuration()
		if s.GetTimeToFirstByte() != nil {
			p.gauge(phaseDuration.metric, s.GetTimeToFirstByte().AsDuration().Seconds(), "first_byte")
		}
	}
	p.gauge(phaseDuration.metric, total.Seconds(), "total")
	results := map[string]float64{}
	for _, a := range c.GetAttempts() {
		result := "connected"
		switch {
		case a.GetAbandoned():
			result = "abandoned"
		case a.GetError() != nil:
			result = a.GetError().GetReason().String()
		}
		results[result]++
	}
	for result, n := range results {
		p.gauge(attempts.metric, n, result)
	}
	p.tls(r)
	p.expectInfo(r)
	ti := c.GetTcpInfo()
	if s := r.summary.GetTcpInfo(); s != nil {
		ti = s
	}
	if ti != nil {
		p.gauge(tcpRTT.metric, ti.GetRtt().AsDuration().Seconds())
		p.gauge(tcpRetransmits.metric, float64(ti.GetTotalRetransmits()))
	}
	p.trace(c.GetPath())
}

// trace adds the metrics of the probe's trace, when it had one that tried
// a hop: a trace the system cannot run, or that failed before its first
// probe, has none (debug=true says why). The hops are at most the
// service's 64 (TraceOptions.max_hops), which bounds the series.
func (p *probeMetrics) trace(path *netprobev1.Path) {
	hops := path.GetHops()
	if len(hops) == 0 {
		return
	}
	var sent, lost uint32
	last := 0
	h := fnv.New32()
	for _, hop := range hops {
		sent += hop.GetSent()
		lost += hop.GetSent() - min(hop.GetAnswered(), hop.GetSent())
		// Grafana's agent hashes the hosts of each TTL, one after the
		// other, a silent TTL adding nothing.
		h.Write([]byte(hop.GetAddress()))
		ttl := strconv.FormatUint(uint64(hop.GetTtl()), 10)
		p.gauge(traceHop.metric, 1, ttl, hop.GetAddress(), hop.GetAnswer().String())
		if hop.GetAnswer() != netprobev1.HopAnswer_HOP_ANSWER_NONE {
			last = int(hop.GetTtl())
		}
		if rtts := hop.GetRtts(); len(rtts) > 0 {
			var sum time.Duration
			for _, d := range rtts {
				sum += d.AsDuration()
			}
			p.gauge(traceHopRTT.metric, (sum / time.Duration(len(rtts))).Seconds(), ttl)
		}
	}
	p.gauge(traceHops.metric, float64(len(hops)))
	loss := 0.0
	if sent > 0 {
		loss = float64(lost) / float64(sent)
	}
	p.gauge(traceLoss.metric, loss)
	p.gauge(traceHash.metric, float64(h.Sum32()))
	p.gauge(traceLast.metric, float64(last))
	p.gauge(traceReached.metric, b2f(path.GetReached()))
}

// ipHash is blackbox_exporter's probe_ip_addr_hash: FNV-1a, 32 bits, of
// the address's bytes, 4 of an IPv4 address and 16 of an IPv6 one (as
// Debian's 0.23 gives it for 127.0.0.1 and ::1).
func ipHash(ip netip.Addr) float64 {
	h := fnv.New32a()
	h.Write(ip.AsSlice())
	return float64(h.Sum32())
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// tls adds the handshake's metrics: blackbox_exporter's, and netprobe's
// (whether the chain verified, the leaf's other facts), also when the
// chain did not verify, where blackbox_exporter gives none.
func (p *probeMetrics) tls(r *Result) {
	t := r.connect.GetTls()
	if s := r.summary.GetTls(); s != nil {
		t = s
	}
	if t == nil || t.GetVersion() == "" {
		return
	}
	p.gauge(phaseDuration.metric, t.GetHandshakeDuration().AsDuration().Seconds(), "tls")
	p.gauge(metricTLSVersion, 1, t.GetVersion())
	p.gauge(tlsVerified.metric, b2f(t.GetVerified()))
	chain := t.GetPeerCertificates()
	if len(chain) == 0 {
		return
	}
	earliest := chain[0].GetNotAfter().AsTime()
	for _, c := range chain[1:] {
		if na := c.GetNotAfter().AsTime(); na.Before(earliest) {
			earliest = na
		}
	}
	p.gauge(metricEarliest, float64(earliest.Unix()))
	if t.GetVerified() {
		p.gauge(metricLastChain, float64(earliest.Unix()))
	}
	leaf := chain[0]
	p.gauge(metricLastInfo, 1, leaf.GetSha256Fingerprint(), leaf.GetIssuer(), leaf.GetSubject(), strings.Join(leaf.GetDnsNames(), ","))
	p.gauge(leafCertificate.metric, 1, leaf.GetSha256Fingerprint(), leaf.GetSerial(), strings.Join(leaf.GetIpAddresses(), ","))
}

// expectInfo adds probe_expect_info: the labels of the first labelled
// match.
func (p *probeMetrics) expectInfo(r *Result) {
	for _, match := range r.matches {
		names, values := r.module.ExpectInfo(int(match.GetStep()), match.GetGroups())
		if names == nil {
			continue
		}
		p.gauge(newMetric(expectInfoMetric, expectInfoHelp, names...), 1, values...)
		return
	}
}
