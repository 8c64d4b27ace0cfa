package exporter

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/encoding/protojson"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
)

var (
	descSuccess      = prometheus.NewDesc("probe_success", "Displays whether or not the probe was a success", nil, nil)
	descDuration     = prometheus.NewDesc("probe_duration_seconds", "Returns how long the probe took to complete in seconds", nil, nil)
	descDNS          = prometheus.NewDesc("probe_dns_lookup_time_seconds", "Returns the time taken for probe dns lookup in seconds", nil, nil)
	descIPProtocol   = prometheus.NewDesc("probe_ip_protocol", "Specifies whether probe ip protocol is IP4 or IP6", nil, nil)
	descIPHash       = prometheus.NewDesc("probe_ip_addr_hash", "Specifies the hash of IP address. It's useful to detect if the IP address changes.", nil, nil)
	descRegex        = prometheus.NewDesc("probe_failed_due_to_regex", "Indicates if probe failed due to regex", nil, nil)
	descTLSVersion   = prometheus.NewDesc("probe_tls_version_info", "Returns the TLS version used or NaN when unknown", []string{"version"}, nil)
	descEarliest     = prometheus.NewDesc("probe_ssl_earliest_cert_expiry", "Returns last SSL chain expiry in unixtime", nil, nil)
	descLastChain    = prometheus.NewDesc("probe_ssl_last_chain_expiry_timestamp_seconds", "Returns last SSL chain expiry in timestamp", nil, nil)
	descLastInfo     = prometheus.NewDesc("probe_ssl_last_chain_info", "Contains SSL leaf certificate information", []string{"fingerprint_sha256", "subject", "issuer", "subjectalternative", "serialnumber"}, nil)
	descFailure      = prometheus.NewDesc("probe_failure_info", "Why the probe failed: its stage, reason and errno, as netprobe_probes_total names them.", []string{"stage", "reason", "errno"}, nil)
	descPhase        = prometheus.NewDesc("probe_phase_duration_seconds", "How long each phase of the probe took: resolve, connect, tls, first_byte (from the start) and total.", []string{"phase"}, nil)
	descAttempts     = prometheus.NewDesc("probe_attempts_total", "The probe's connection attempts, by result: connected, abandoned, or the reason of the failure.", []string{"result"}, nil)
	descVerified     = prometheus.NewDesc("probe_tls_verified", "Whether the peer's chain verified (netprobe reports its expiry either way).", nil, nil)
	descRTT          = prometheus.NewDesc("probe_tcp_rtt_seconds", "The kernel's smoothed round-trip time of the connection (TCP_INFO), at its end.", nil, nil)
	descRetransmits  = prometheus.NewDesc("probe_tcp_retransmits", "The segments the kernel sent again on the connection (TCP_INFO), at its end.", nil, nil)
	expectInfoHelp   = "Explicit content matched"
	expectInfoMetric = "probe_expect_info"
)

// probeMetrics collects one probe's metrics, made once: the registry of
// the scrape gathers them.
type probeMetrics struct {
	ms []prometheus.Metric
}

// Describe describes nothing: the metrics are fixed, above, and the
// registry checks them as it gathers.
func (p *probeMetrics) Describe(chan<- *prometheus.Desc) {}

func (p *probeMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, m := range p.ms {
		ch <- m
	}
}

// gauge adds a gauge. Label values are made valid UTF-8, which Prometheus
// requires: they carry what targets sent (an expect's groups, a
// certificate's names), which may be any bytes.
func (p *probeMetrics) gauge(d *prometheus.Desc, v float64, labels ...string) {
	p.constant(d, prometheus.GaugeValue, v, labels...)
}

// constant adds a metric of type t, its label values made valid UTF-8
// (each run of bytes that are not becomes U+FFFD).
func (p *probeMetrics) constant(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	valid := make([]string, len(labels))
	for i, l := range labels {
		valid[i] = strings.ToValidUTF8(l, "\uFFFD")
	}
	p.ms = append(p.ms, prometheus.MustNewConstMetric(d, t, v, valid...))
}

// scrapeMetrics are a probe's metrics: blackbox_exporter's, with their
// names and meanings, and netprobe's own.
func scrapeMetrics(m *modules.Module, res *scrapeResult, duration time.Duration, logger *slog.Logger) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	p := &probeMetrics{}
	reg.MustRegister(p)
	pe := res.probeError()
	success := 0.0
	if pe == nil && res.connect != nil {
		success = 1
	}
	p.gauge(descSuccess, success)
	p.gauge(descDuration, duration.Seconds())
	c := res.connect
	if c == nil {
		return reg
	}
	p.gauge(descDNS, c.GetResolveDuration().AsDuration().Seconds())
	if ip := peerIP(c); ip.IsValid() {
		family := 6.0
		if ip.Is4() {
			family = 4
		}
		p.gauge(descIPProtocol, family)
		h := fnv.New32a()
		h.Write([]byte(ip.String()))
		p.gauge(descIPHash, float64(h.Sum32()))
	}
	p.gauge(descPhase, c.GetResolveDuration().AsDuration().Seconds(), "resolve")
	p.gauge(descPhase, c.GetConnectDuration().AsDuration().Seconds(), "connect")
	total := c.GetTotalDuration().AsDuration()
	if s := res.summary; s != nil {
		total = s.GetTotalDuration().AsDuration()
		if s.GetTimeToFirstByte() != nil {
			p.gauge(descPhase, s.GetTimeToFirstByte().AsDuration().Seconds(), "first_byte")
		}
	}
	p.gauge(descPhase, total.Seconds(), "total")
	attempts := map[string]float64{}
	for _, a := range c.GetAttempts() {
		result := "connected"
		switch {
		case a.GetAbandoned():
			result = "abandoned"
		case a.GetError() != nil:
			result = a.GetError().GetReason().String()
		}
		attempts[result]++
	}
	for result, n := range attempts {
		p.constant(descAttempts, prometheus.CounterValue, n, result)
	}
	p.tls(res)
	if len(m.Steps) > 0 && c.GetError() == nil {
		regex := 0.0
		if pe.GetStage() == netprobev1.Stage_STAGE_EXPECT && pe.GetReason() == netprobev1.Reason_REASON_NO_MATCH {
			regex = 1
		}
		p.gauge(descRegex, regex)
		p.expectInfo(m, res.matches)
	}
	ti := c.GetTcpInfo()
	if s := res.summary.GetTcpInfo(); s != nil {
		ti = s
	}
	if ti != nil {
		p.gauge(descRTT, ti.GetRtt().AsDuration().Seconds())
		p.gauge(descRetransmits, float64(ti.GetTotalRetransmits()))
	}
	if pe != nil {
		p.gauge(descFailure, 1, pe.GetStage().String(), pe.GetReason().String(), pe.GetErrno())
		logger.Error("probe failed", "stage", pe.GetStage(), "reason", pe.GetReason(), "errno", pe.GetErrno(), "address", pe.GetAddress(), "message", pe.GetMessage())
	} else {
		logger.Info("probe succeeded", "peer", c.GetPeerAddress(), "duration", duration)
	}
	return reg
}

// peerIP is the address the probe connected to, or else the first it
// tried.
func peerIP(c *netprobev1.ConnectResponse) netip.Addr {
	addr := c.GetPeerAddress()
	if addr == "" && len(c.GetAttempts()) > 0 {
		addr = c.GetAttempts()[0].GetAddress()
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// tls adds the handshake's metrics: blackbox_exporter's, and the expiry
// and verification of a chain that did not verify, which it has not.
func (p *probeMetrics) tls(res *scrapeResult) {
	t := res.connect.GetTls()
	if s := res.summary.GetTls(); s != nil {
		t = s
	}
	if t == nil || t.GetVersion() == "" {
		return
	}
	p.gauge(descPhase, t.GetHandshakeDuration().AsDuration().Seconds(), "tls")
	p.gauge(descTLSVersion, 1, t.GetVersion())
	verified := 0.0
	if t.GetVerified() {
		verified = 1
	}
	p.gauge(descVerified, verified)
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
	p.gauge(descEarliest, float64(earliest.Unix()))
	if t.GetVerified() {
		p.gauge(descLastChain, float64(earliest.Unix()))
	}
	leaf := chain[0]
	p.gauge(descLastInfo, 1, leaf.GetSha256Fingerprint(), leaf.GetSubject(), leaf.GetIssuer(), strings.Join(leaf.GetDnsNames(), ","), leaf.GetSerial())
}

// expectInfo adds probe_expect_info: the labels of the first labelled
// match.
func (p *probeMetrics) expectInfo(m *modules.Module, matches []*netprobev1.ExpectMatch) {
	for _, match := range matches {
		names, values := m.ExpectInfo(int(match.GetStep()), match.GetGroups())
		if names == nil {
			continue
		}
		p.gauge(prometheus.NewDesc(expectInfoMetric, expectInfoHelp, names, nil), 1, values...)
		return
	}
}

// writeDebug answers debug=true: the probe's log, its metrics and its
// report, as text for a person.
func writeDebug(w http.ResponseWriter, log *bytes.Buffer, reg *prometheus.Registry, res *scrapeResult) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Logs for the probe:\n%s\n\nMetrics that would have been returned:\n", log)
	families, _ := reg.Gather()
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		enc.Encode(f)
	}
	fmt.Fprintln(w, "\n\nThe probe's report:")
	opts := protojson.MarshalOptions{Multiline: true}
	if res.connect != nil {
		b, _ := opts.Marshal(res.connect)
		fmt.Fprintf(w, "connect: %s\n", b)
	}
	for _, m := range res.matches {
		b, _ := opts.Marshal(m)
		fmt.Fprintf(w, "match: %s\n", b)
	}
	if res.summary != nil {
		b, _ := opts.Marshal(res.summary)
		fmt.Fprintf(w, "summary: %s\n", b)
	}
}
