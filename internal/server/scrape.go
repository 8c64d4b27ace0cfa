package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/settings"
	"github.com/netprobe/netprobe/service"
)

// Bounds of the /probe endpoint.
const (
	// defaultScrapeTimeout is the probe's timeout when the scrape says
	// none, as blackbox_exporter's is.
	defaultScrapeTimeout = 120 * time.Second
	// moduleCheckEvery is how often the module file is looked at for a
	// change, at most.
	moduleCheckEvery = time.Second
)

// scraper serves /probe: blackbox_exporter's multi-target endpoint, one
// probe a scrape, as Prometheus metrics. It is a caller of the probe
// service like any other: authenticated, rate-limited, counted in flight
// and held to the target policy.
type scraper struct {
	s      *Server
	file   string
	offset time.Duration
	web    *webConfig
	// check validates the modules' requests as the probe service will.
	check *moduleCheck

	// reloading is held while the module file is read and checked, which
	// takes seconds for a file of many thousand modules: outside mu, so
	// that scrapes never wait for it.
	reloading sync.Mutex
	// mu guards the modules in use, swapped in whole.
	mu      sync.Mutex
	set     *modules.Set
	stamp   time.Time
	checked time.Time
	// failed is the modification time of the last file that did not
	// load, which is not read again until it changes.
	failed time.Time
}

func newScraper(s *Server, cfg Config) (*scraper, error) {
	check, err := newModuleCheck(cfg, s.sources)
	if err != nil {
		return nil, err
	}
	sc := &scraper{s: s, file: cfg.ModulesFile, offset: cfg.ScrapeTimeoutOffset, check: check,
		web: &webConfig{path: cfg.WebConfigFile}}
	if sc.file == "" {
		sc.set = modules.Defaults()
		return sc, nil
	}
	set, stamp, warnings, err := sc.check.load(sc.file)
	if err != nil {
		return nil, err
	}
	sc.logWarnings(warnings)
	sc.set, sc.stamp, sc.checked = set, stamp, time.Now()
	return sc, nil
}

func (sc *scraper) logWarnings(warnings []string) {
	for _, w := range warnings {
		sc.s.logger.Warn("module file", "file", sc.file, "warning", w)
	}
}

// moduleCheck loads module files and checks them against a server's
// configuration: the source addresses it may bind, and every module's
// request as its probe service validates it, so that a module no scrape
// could run is refused as the file loads, not answered 400 on every
// scrape.
type moduleCheck struct {
	sources []netip.Prefix
	// service validates requests; it probes nothing.
	service            *service.Server
	offset, maxTimeout time.Duration
}

func newModuleCheck(cfg Config, sources []netip.Prefix) (*moduleCheck, error) {
	svc, err := service.New(service.Config{
		Limits: cfg.Limits, AllowedSources: sources,
	})
	if err != nil {
		return nil, err
	}
	return &moduleCheck{sources: sources, service: svc, offset: cfg.ScrapeTimeoutOffset, maxTimeout: cfg.MaxTimeout}, nil
}

// load reads and checks the module file at path, returning the modules,
// the file's modification time and the modules it will not run.
func (c *moduleCheck) load(path string) (*modules.Set, time.Time, []string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, time.Time{}, nil, err
	}
	set, warnings, err := modules.Load(path)
	if err != nil {
		return nil, time.Time{}, nil, err
	}
	if err := c.modules(set); err != nil {
		return nil, time.Time{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	return set, fi.ModTime(), warnings, nil
}

// checkTarget stands for the targets of scrapes when a module's request is
// checked: any name will do.
var checkTarget = &netprobev1.Target{Host: "localhost", Port: 1}

// modules checks every module of set: its source_ip_address is one the
// server may bind (--allow-source), and its request is valid.
func (c *moduleCheck) modules(set *modules.Set) error {
	for _, name := range set.Names() {
		m := set.Modules[name]
		if m.Source.IsValid() && !slices.ContainsFunc(c.sources, func(p netip.Prefix) bool { return p.Contains(m.Source) }) {
			return fmt.Errorf("module %s: source_ip_address %s is not an address this server may bind (probed --allow-source)", name, m.Source)
		}
		// A module that names a file it could not read loads, and its
		// scrapes say why (as blackbox_exporter's do).
		if m.Err != nil {
			continue
		}
		connect, fetch := m.Request(checkTarget, scrapeTimeout(http.Header{}, c.offset, m.Timeout, c.maxTimeout))
		var err error
		if connect != nil {
			err = c.service.CheckConnect(connect)
		} else {
			err = c.service.CheckFetch(fetch)
		}
		if err != nil {
			why := violations(err)
			if m.ClientCert != nil {
				why += fmt.Sprintf(" (the module's client certificate is presented as the client identity %s%s)", modules.IdentityPrefix, name)
			}
			return fmt.Errorf("module %s cannot be scraped: %s", name, why)
		}
	}
	return nil
}

// violations lists the field violations of a refused request.
func violations(err error) string {
	var out []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, v.GetField()+": "+v.GetDescription())
			}
		}
	}
	if len(out) == 0 {
		return status.Convert(err).Message()
	}
	return strings.Join(out, "; ")
}

// CheckModules loads a module file as a server with cfg would, returning
// its warnings.
func CheckModules(path string, cfg Config) (*modules.Set, []string, error) {
	if err := settings.Defaults(&cfg); err != nil {
		return nil, nil, err
	}
	sources, err := parseSources(cfg.AllowSource)
	if err != nil {
		return nil, nil, err
	}
	check, err := newModuleCheck(cfg, sources)
	if err != nil {
		return nil, nil, err
	}
	set, _, warnings, err := check.load(path)
	return set, warnings, err
}

// modules returns the modules in use. Once a second at most, it looks at
// the module file, and if it changed, reloads it in the background: the
// scrape goes on with the modules as they are, and a file that no longer
// loads leaves them so.
func (sc *scraper) modules() *modules.Set {
	sc.mu.Lock()
	set, stamp, failed := sc.set, sc.stamp, sc.failed
	due := sc.file != "" && time.Since(sc.checked) >= moduleCheckEvery
	if due {
		sc.checked = time.Now()
	}
	sc.mu.Unlock()
	if !due {
		return set
	}
	if fi, err := os.Stat(sc.file); err == nil && (fi.ModTime().Equal(stamp) || fi.ModTime().Equal(failed)) {
		return set
	}
	// Another reload under way will see the change.
	if sc.reloading.TryLock() {
		go func() {
			defer sc.reloading.Unlock()
			sc.reloadLocked()
		}()
	}
	return set
}

// reload reads the module file again (SIGHUP), keeping the modules as
// they were when it does not load.
func (sc *scraper) reload() error {
	if sc.file == "" {
		return nil
	}
	sc.reloading.Lock()
	defer sc.reloading.Unlock()
	return sc.reloadLocked()
}

// reloadLocked loads the module file, holding reloading, and swaps the
// modules in under mu.
func (sc *scraper) reloadLocked() error {
	set, stamp, warnings, err := sc.check.load(sc.file)
	if err != nil {
		sc.s.logger.Error("module file not reloaded: keeping the modules as they were", "file", sc.file, "err", err)
		if fi, statErr := os.Stat(sc.file); statErr == nil {
			sc.mu.Lock()
			sc.failed = fi.ModTime()
			sc.mu.Unlock()
		}
		return err
	}
	sc.logWarnings(warnings)
	sc.mu.Lock()
	sc.set, sc.stamp = set, stamp
	sc.mu.Unlock()
	sc.s.logger.Info("reloaded the module file", "file", sc.file, "modules", len(set.Modules))
	return nil
}

// Certificate is a module's client certificate ("module/NAME"), or
// another identity of the server's.
func (sc *scraper) certificate(ids identities, name string) (*tls.Certificate, bool) {
	if m, ok := strings.CutPrefix(name, modules.IdentityPrefix); ok {
		mod := sc.modules().Modules[m]
		if mod == nil || mod.ClientCert == nil {
			return nil, false
		}
		return mod.ClientCert, true
	}
	return ids.Certificate(name)
}

// moduleIdentities are the server's client identities and its modules'.
type moduleIdentities struct {
	ids identities
	sc  *scraper
}

func (m moduleIdentities) Certificate(name string) (*tls.Certificate, bool) {
	return m.sc.certificate(m.ids, name)
}

// scrapeKey marks the context of a /probe probe with its module's name.
type scrapeKey struct{}

// scrapeResult is what a probe of /probe found.
type scrapeResult struct {
	connect *netprobev1.ConnectResponse
	summary *netprobev1.FetchSummary
	matches []*netprobev1.ExpectMatch
}

// probeError is the probe's failure, if any.
func (r *scrapeResult) probeError() *netprobev1.ProbeError {
	if e := r.connect.GetError(); e != nil {
		return e
	}
	return r.summary.GetError()
}

// keep is the Emit of a Fetch of /probe: it keeps the connect report, the
// expects' matches and the summary, and drops the data.
func (r *scrapeResult) keep(m *netprobev1.FetchResponse) error {
	switch ev := m.GetEvent().(type) {
	case *netprobev1.FetchResponse_Connect:
		r.connect = ev.Connect
	case *netprobev1.FetchResponse_Match:
		r.matches = append(r.matches, ev.Match)
	case *netprobev1.FetchResponse_Summary:
		r.summary = ev.Summary
	}
	return nil
}

// ServeHTTP answers GET /probe?target=HOST:PORT&module=NAME[&debug=true].
func (sc *scraper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	q := r.URL.Query()
	name := q.Get("module")
	if name == "" {
		name = "tcp_connect"
	}
	set := sc.modules()
	m, ok := set.Modules[name]
	if !ok {
		if prober, skipped := set.Skipped[name]; skipped {
			http.Error(w, fmt.Sprintf("Module %q uses the %s prober, which netprobe does not run", name, prober), http.StatusBadRequest)
			return
		}
		http.Error(w, fmt.Sprintf("Unknown module %q", name), http.StatusBadRequest)
		return
	}
	raw := q.Get("target")
	if raw == "" {
		http.Error(w, "Target parameter is missing", http.StatusBadRequest)
		return
	}
	target, err := scrapeTarget(raw)
	if err != nil {
		http.Error(w, fmt.Sprintf("target %q: %v", raw, err), http.StatusBadRequest)
		return
	}
	ctx, err := sc.caller(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", "Bearer")
		http.Error(w, status.Convert(err).Message(), http.StatusUnauthorized)
		return
	}
	release, err := sc.s.admission.Admit(ctx, admission.Scrape)
	if err != nil {
		http.Error(w, status.Convert(err).Message(), httpStatus(status.Code(err)))
		return
	}
	defer release()

	timeout := scrapeTimeout(r.Header, sc.offset, m.Timeout, sc.s.cfg.MaxTimeout)
	// The probe ends by its own timeout; the context is only the caller's
	// leaving.
	ctx, cancel := context.WithTimeout(ctx, timeout+time.Second)
	defer cancel()
	var log bytes.Buffer
	logger := slog.New(slog.DiscardHandler)
	debug := q.Get("debug") == "true"
	if debug {
		logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	logger.Info("beginning probe", "module", name, "target", raw, "timeout", timeout)
	res, err := sc.probe(ctx, m, target, timeout)
	duration := time.Since(start)
	// A probe the drain cut short (MetricsServer.Drain ends the scrape's
	// context, the service a Fetch) says nothing of its target: 503, not
	// probe_success 0.
	if errors.Is(context.Cause(ctx), service.ErrShutdown) || res.probeError().GetReason() == netprobev1.Reason_REASON_SERVER_SHUTDOWN {
		w.Header().Set("Connection", "close")
		http.Error(w, service.ErrShutdown.Error()+": the probe was cut short", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		code := status.Code(err)
		logger.Error("the probe server refused the probe", "code", code, "err", status.Convert(err).Message())
		if !debug {
			http.Error(w, status.Convert(err).Message(), httpStatus(code))
			return
		}
	}
	reg := scrapeMetrics(m, res, duration, logger)
	if debug {
		writeDebug(w, &log, reg, res)
		return
	}
	// A few hundred bytes are not worth compressing: gzip took a tenth of
	// a scrape's CPU.
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true, DisableCompression: true}).ServeHTTP(w, r)
}

// caller names the scraper as every way in names its caller
// (admission.Identify): by its basic auth user when the web configuration
// has users (exporter-toolkit has checked the password); else by its
// bearer token when the server has tokens; else by its verified client
// certificate; else by its address. It names the caller of every request
// of the metrics listener that needs one (see guard).
func (sc *scraper) caller(r *http.Request) (context.Context, error) {
	c := admission.Credentials{Authorization: r.Header.Values("Authorization"), TLS: r.TLS}
	if sc.web.hasUsers() {
		c.BasicUser, _, _ = r.BasicAuth()
	}
	name, err := sc.s.admission.Identify(c)
	switch {
	case err != nil:
		return nil, err
	case name != "":
		return service.WithCaller(r.Context(), name), nil
	}
	return admission.PeerOf(r), nil
}

// guard serves h only to a caller /probe would serve, named by the same
// function (caller): with tokens, one with a valid bearer token; with web
// configuration users, exporter-toolkit has already checked the password.
// Config.PublicStatus serves h to anyone.
func (sc *scraper) guard(h http.Handler) http.Handler {
	if sc.s.cfg.PublicStatus {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := sc.caller(r); err != nil {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, status.Convert(err).Message(), http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// probe runs m against target through the probe service.
func (sc *scraper) probe(ctx context.Context, m *modules.Module, target *netprobev1.Target, timeout time.Duration) (*scrapeResult, error) {
	res := &scrapeResult{}
	if m.Err != nil {
		res.connect = &netprobev1.ConnectResponse{Error: &netprobev1.ProbeError{
			Stage: netprobev1.Stage_STAGE_SOCKET, Reason: netprobev1.Reason_REASON_OTHER, Message: m.Err.Error(),
		}}
		return res, nil
	}
	ctx = context.WithValue(ctx, scrapeKey{}, m.Name)
	if m.ClientCert != nil {
		ctx = service.WithIdentityGrant(ctx, modules.IdentityPrefix+m.Name)
	}
	connect, fetch := m.Request(target, timeout)
	if connect != nil {
		resp, err := sc.s.service.Connect(ctx, connect)
		if err != nil {
			return res, err
		}
		res.connect = resp
		return res, nil
	}
	return res, sc.s.service.FetchTo(ctx, fetch, res.keep)
}

// scrapeTarget reads /probe's target: HOST:PORT, PORT a number or a
// service name.
func scrapeTarget(raw string) (*netprobev1.Target, error) {
	host, port, err := net.SplitHostPort(raw)
	if err != nil {
		return nil, errors.New("want HOST:PORT")
	}
	t := &netprobev1.Target{Host: host}
	if n, err := strconv.ParseUint(port, 10, 16); err == nil {
		t.Port = uint32(n)
	} else {
		t.Service = port
	}
	return t, nil
}

// scrapeTimeout is the probe's timeout: the scrape's (its header, less
// offset), or the module's when shorter, within the server's cap.
func scrapeTimeout(h http.Header, offset, module, max time.Duration) time.Duration {
	timeout := defaultScrapeTimeout
	// A value too large for a Duration is clamped before it is one.
	if v, err := strconv.ParseFloat(h.Get("X-Prometheus-Scrape-Timeout-Seconds"), 64); err == nil && v > 0 {
		timeout = time.Duration(min(v, defaultScrapeTimeout.Seconds()) * float64(time.Second))
		if timeout > offset {
			timeout -= offset
		}
	}
	if module > 0 && module < timeout {
		timeout = module
	}
	return min(timeout, max)
}

// httpStatus is the HTTP status of a refusal.
func httpStatus(code codes.Code) int {
	switch code {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// The descriptions of a probe's metrics: blackbox_exporter's names, help
// and labels where it has the metric, netprobe's own after.
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
