package exporter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/audit"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/internal/probemetrics"
	"github.com/netprobe/netprobe/service"
)

// defaultScrapeTimeout is the probe's timeout when the scrape says none,
// as blackbox_exporter's is.
const defaultScrapeTimeout = 120 * time.Second

// scraper serves /probe: blackbox_exporter's multi-target endpoint, one
// probe a scrape, as Prometheus metrics. It is a caller of the probe
// service like any other: authenticated, rate-limited, counted in flight
// and held to the target policy.
type scraper struct {
	admission *admission.Admission
	prober    Prober
	// fleet runs the probes of from=; nil serves none.
	fleet   Fleet
	modules *modules.Store
	web     *webConfig
	// offset is taken off a scrape's timeout; maxTimeout is the longest
	// a probe may take.
	offset, maxTimeout time.Duration
	// public serves what guard guards to anyone.
	public bool
	// observe records a probe that failed before the probe service saw
	// it, as the service's Config.Observe records those it runs.
	observe func(context.Context, service.Report)
	logger  *slog.Logger
}

// Prober runs the probes of /probe: the probe service.
type Prober interface {
	Connect(context.Context, *netprobev1.ConnectRequest) (*netprobev1.ConnectResponse, error)
	FetchTo(context.Context, *netprobev1.FetchRequest, service.Emit) error
}

// ServeHTTP answers GET /probe?target=HOST:PORT&module=NAME[&debug=true]
// (with &from=SELECTOR, from the fleet's nodes: see fanOut).
// As blackbox_exporter's does, it answers 200 with probe_success 0 for
// everything that is the target's fault: no port, a host that is not one,
// a name that does not resolve, an address the target policy denies (and
// nothing is dialled). Only what is wrong with the scrape itself is an
// HTTP error: its credentials (401), its module (400), no target (400),
// its caller's limits (429), the server's drain (503).
func (sc *scraper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	q := r.URL.Query()
	ctx, err := sc.caller(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", "Bearer")
		http.Error(w, status.Convert(err).Message(), http.StatusUnauthorized)
		return
	}
	name := q.Get("module")
	if name == "" {
		name = "tcp_connect"
	}
	set := sc.modules.Set()
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
	if q.Has("from") {
		sc.fanOut(ctx, w, r, m, raw, start)
		return
	}
	release, err := sc.admission.Admit(ctx, admission.Scrape)
	if err != nil {
		http.Error(w, status.Convert(err).Message(), httpStatus(status.Code(err)))
		return
	}
	defer release()

	timeout, why := scrapeTimeout(r.Header, sc.offset, m.Timeout, sc.maxTimeout)
	if m.Trace != nil {
		// The scrape's budget holds the probe and its trace: see
		// modules.Budget.
		timeout, _ = scrapeTimeout(r.Header, sc.offset, 0, sc.maxTimeout)
		probe, trace := m.Budget(timeout)
		why += fmt.Sprintf("; of the scrape's %v, the trace (netprobe.trace, timeout %v) has %v and the probe %v", timeout, m.Trace.GetTimeout().AsDuration(), trace, probe)
	}
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
	res := probemetrics.New(m, debug)
	err = sc.probe(ctx, res, m, raw, timeout, logger)
	duration := time.Since(start)
	// A probe the drain cut short (MetricsServer.Drain ends the scrape's
	// context, the service a Fetch) says nothing of its target: 503, not
	// probe_success 0.
	if errors.Is(context.Cause(ctx), service.ErrShutdown) || res.Error().GetReason() == netprobev1.Reason_REASON_SERVER_SHUTDOWN {
		w.Header().Set("Connection", "close")
		http.Error(w, service.ErrShutdown.Error()+": the probe was cut short", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		code := status.Code(err)
		logger.Error("the probe service refused the scrape", "code", code, "err", status.Convert(err).Message())
		http.Error(w, status.Convert(err).Message(), httpStatus(code))
		return
	}
	if debug {
		reg := res.Registry(duration, logger)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		res.WriteDebug(w, log.Bytes(), why, reg)
		return
	}
	expose(w, r, q, res.Exposition(duration, logger))
}

// expose answers r with e, as promhttp.HandlerFor(e,
// promhttp.HandlerOpts{EnableOpenMetrics: true, DisableCompression: true})
// would (TestExpose holds the two alike): in the format r's Accept header
// asks for, only the families q's name[] names when it names any, a 500
// when the metrics cannot be gathered. It does without what such a
// handler costs a scrape of a few hundred bytes: its own making (a
// CounterVec for its errors among the rest), the query parsed again, the
// Accept header negotiated anew when it is the one the last scrape sent
// (negotiate), and for the text formats, which Prometheus asks for,
// metric families made to be encoded (e.AppendText writes them); gzip,
// a tenth of a scrape's CPU, too: these bytes are sent as they are.
func expose(w http.ResponseWriter, r *http.Request, q url.Values, e *probemetrics.Exposition) {
	n := negotiate(r.Header)
	var only map[string]bool
	if names := q["name[]"]; len(names) > 0 {
		only = make(map[string]bool, len(names))
		for _, name := range names {
			only[name] = true
		}
	}
	if n.text {
		bp := texts.Get().(*[]byte)
		defer func() {
			// A trace's metrics are a few KiB; a larger buffer is not kept.
			if cap(*bp) <= 64<<10 {
				texts.Put(bp)
			}
		}()
		b, err := e.AppendText((*bp)[:0], n.openMetrics, only)
		*bp = b
		if err != nil {
			gatherError(w, err)
			return
		}
		exposeHeader(w, n.format)
		w.Write(b)
		return
	}
	mfs, err := e.Gather()
	if err != nil {
		gatherError(w, err)
		return
	}
	exposeHeader(w, n.format)
	enc := expfmt.NewEncoder(w, n.format)
	for _, mf := range mfs {
		if only != nil && !only[mf.GetName()] {
			continue
		}
		// A write that fails is the scraper gone: nothing is left to tell.
		if enc.Encode(mf) != nil {
			return
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		c.Close()
	}
}

// texts are buffers for the text formats' answers.
var texts = sync.Pool{New: func() any { return new([]byte) }}

func exposeHeader(w http.ResponseWriter, format expfmt.Format) {
	w.Header().Add("Vary", "Accept")
	w.Header().Set("Content-Type", string(format))
}

// gatherError answers a scrape whose metrics could not be gathered, as
// promhttp does.
func gatherError(w http.ResponseWriter, err error) {
	http.Error(w, "An error has occurred while serving metrics:\n\n"+err.Error(), http.StatusInternalServerError)
}

// negotiated is the format expfmt.NegotiateAccept chose for an Accept
// header.
type negotiated struct {
	accept string
	format expfmt.Format
	// text is whether the format is one AppendText writes: the text
	// format or, with openMetrics, OpenMetrics.
	text, openMetrics bool
}

// lastNegotiated is the last Accept header's format: one, so that a
// scraper that changes its header each time (a hostile one) costs a
// negotiation, as it would anyway, and no more memory than its header.
var lastNegotiated atomic.Pointer[negotiated]

// negotiate is the format of promhttp's choice for a scraper that sent h
// (expfmt.NegotiateAccept, which reads h's first Accept header and
// nothing else that a scrape changes).
func negotiate(h http.Header) *negotiated {
	accept := h.Get("Accept")
	if n := lastNegotiated.Load(); n != nil && n.accept == accept {
		return n
	}
	n := &negotiated{accept: accept, format: expfmt.NegotiateAccept(h, expfmt.DefaultOpenMetricsAcceptedFormats()...)}
	switch n.format.FormatType() {
	case expfmt.TypeTextPlain:
		n.text = true
	case expfmt.TypeOpenMetrics:
		// 1.0.0 or 0.0.1, the versions promhttp offers (TestExpose asks
		// for 2.0.0 too).
		n.text, n.openMetrics = true, true
	}
	lastNegotiated.Store(n)
	return n
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
	id, err := sc.admission.Identify(c)
	switch {
	case err != nil:
		return nil, err
	case id.Caller != "":
		return service.WithCaller(r.Context(), id.Caller), nil
	}
	return admission.PeerOf(r), nil
}

// guard serves h only to a caller /probe would serve, named by the same
// function (caller): with tokens, one with a valid bearer token; with web
// configuration users, exporter-toolkit has already checked the password.
// Config.PublicStatus serves h to anyone.
func (sc *scraper) guard(h http.Handler) http.Handler {
	if sc.public {
		return h
	}
	return sc.require(h)
}

// require serves h only to a caller /probe would serve, whatever
// Config.PublicStatus says: for what acts rather than shows.
func (sc *scraper) require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := sc.caller(r); err != nil {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, status.Convert(err).Message(), http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// probe runs m against the target raw names, through the probe service,
// into res. A target that cannot be probed (not HOST:PORT, a host that is
// not one, an address the policy denies) is a probe that failed; the
// error returned is the probe service's refusal of the scrape itself (the
// caller's limits, the drain).
func (sc *scraper) probe(ctx context.Context, res *probemetrics.Result, m *modules.Module, raw string, timeout time.Duration, logger *slog.Logger) error {
	ctx = audit.WithVia(ctx, "/probe "+m.Name)
	target := sc.target(ctx, res, m, raw, timeout, logger)
	if target == nil {
		return nil
	}
	var err error
	if m.ClientCert != nil {
		ctx = service.WithIdentityGrant(ctx, modules.IdentityPrefix+m.Name)
	}
	connect, fetch := m.Request(target, timeout)
	if connect != nil {
		var resp *netprobev1.ConnectResponse
		if resp, err = sc.prober.Connect(ctx, connect); err == nil {
			res.Connected(resp)
		}
	} else {
		err = sc.prober.FetchTo(ctx, fetch, res.Keep)
	}
	if pe := targetFailure(err); pe != nil {
		if status.Code(err) == codes.PermissionDenied {
			// The probe service recorded the refusal itself.
			res.Fail(pe)
		} else {
			sc.failed(ctx, res, m, "", target, timeout, pe)
		}
		logger.Error("the probe service refused the target: nothing was dialled", "stage", pe.GetStage(), "reason", pe.GetReason(), "rule", pe.GetRule(), "why", pe.GetMessage())
		return nil
	}
	return err
}

// target is the target raw names, to probe with m; or nil when it cannot
// be probed (not HOST:PORT, or m cannot run), which fails res. An icmp
// module's target is a host, as blackbox_exporter's is: it resolves raw
// as it is, and a HOST:PORT fails there, a name that does not resolve.
func (sc *scraper) target(ctx context.Context, res *probemetrics.Result, m *modules.Module, raw string, timeout time.Duration, logger *slog.Logger) *netprobev1.Target {
	if m.Prober == "icmp" {
		res.Addressed(raw)
		return sc.runnable(ctx, res, m, &netprobev1.Target{Host: raw}, timeout, logger)
	}
	host, port, err := net.SplitHostPort(raw)
	if err != nil {
		// blackbox_exporter, too, fails the probe before resolving
		// anything.
		sc.failed(ctx, res, m, raw, nil, timeout, &netprobev1.ProbeError{
			Stage: netprobev1.Stage_STAGE_SERVICE_LOOKUP, Reason: netprobev1.Reason_REASON_UNKNOWN_SERVICE, Address: raw,
			Message: fmt.Sprintf("target %q is not HOST:PORT: %v", raw, err),
		})
		logger.Error("the target is not HOST:PORT: nothing was dialled", "err", err)
		return nil
	}
	res.Addressed(host)
	target := &netprobev1.Target{Host: host}
	if n, err := strconv.ParseUint(port, 10, 16); err == nil {
		target.Port = uint32(n)
	} else {
		// A number over 65535 is a service name the probe service refuses.
		target.Service = port
	}
	return sc.runnable(ctx, res, m, target, timeout, logger)
}

// runnable is target, or nil when m cannot run, which fails res.
func (sc *scraper) runnable(ctx context.Context, res *probemetrics.Result, m *modules.Module, target *netprobev1.Target, timeout time.Duration, logger *slog.Logger) *netprobev1.Target {
	if m.Err != nil {
		sc.failed(ctx, res, m, "", target, timeout, &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_SOCKET, Reason: netprobev1.Reason_REASON_OTHER, Message: m.Err.Error()})
		logger.Error("the module cannot run: nothing was dialled", "err", m.Err)
		return nil
	}
	return target
}

// failed fails a probe of m that never reached the probe service, whose
// target cannot be probed, and records it as the service records its
// own (the audit line, the metrics, the page's failing targets). Its
// target is target, or given when it could not be made one.
func (sc *scraper) failed(ctx context.Context, res *probemetrics.Result, m *modules.Module, given string, target *netprobev1.Target, timeout time.Duration, pe *netprobev1.ProbeError) {
	res.Fail(pe)
	method := "Fetch"
	if connect, _ := m.Request(&netprobev1.Target{}, timeout); connect != nil {
		method = "Connect"
	}
	sc.observe(ctx, service.Report{Method: method, Target: target, Given: given, Error: pe})
}

// targetFailure is the ProbeError of a probe the probe service refused
// for its target, or nil for a refusal of the scrape itself (its
// caller's limits, the drain) or none. A target the policy denies, or
// whose source or client identity a rule refuses, is PERMISSION_DENIED
// (STAGE_POLICY); a target the service cannot take is INVALID_ARGUMENT,
// whose fields say which part: its host (STAGE_RESOLVE, as a name that
// does not exist), its port or service (STAGE_SERVICE_LOOKUP). The proto
// has no stage for a bad request: these are where blackbox_exporter's
// probe fails on such a target, and where the probe service would.
func targetFailure(err error) *netprobev1.ProbeError {
	st := status.Convert(err)
	switch st.Code() {
	case codes.PermissionDenied:
		for _, d := range st.Details() {
			if pe, ok := d.(*netprobev1.ProbeError); ok {
				return pe
			}
		}
		return &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_POLICY, Reason: netprobev1.Reason_REASON_DENIED, Message: st.Message()}
	case codes.InvalidArgument:
		pe := &netprobev1.ProbeError{Stage: netprobev1.Stage_STAGE_SOCKET, Reason: netprobev1.Reason_REASON_OTHER, Message: st.Message()}
		for _, d := range st.Details() {
			br, ok := d.(*errdetails.BadRequest)
			if !ok || len(br.GetFieldViolations()) == 0 {
				continue
			}
			// A Sweep's fields are its entry's (/probe's from=).
			switch strings.TrimPrefix(br.GetFieldViolations()[0].GetField(), "targets[0].") {
			case "target.host", "target.ip_family":
				pe.Stage, pe.Reason = netprobev1.Stage_STAGE_RESOLVE, netprobev1.Reason_REASON_NO_SUCH_HOST
			case "target.port", "target.service":
				pe.Stage, pe.Reason = netprobev1.Stage_STAGE_SERVICE_LOOKUP, netprobev1.Reason_REASON_UNKNOWN_SERVICE
			case "target.source_address":
				pe.Stage, pe.Reason = netprobev1.Stage_STAGE_POLICY, netprobev1.Reason_REASON_DENIED
			}
		}
		return pe
	}
	return nil
}

// scrapeTimeout is the probe's timeout: the scrape's (its header, less
// offset), or the module's when shorter, within the server's cap; and
// why, for debug=true.
func scrapeTimeout(h http.Header, offset, module, max time.Duration) (time.Duration, string) {
	timeout := defaultScrapeTimeout
	header := h.Get("X-Prometheus-Scrape-Timeout-Seconds")
	why := fmt.Sprintf("no X-Prometheus-Scrape-Timeout-Seconds header: %v, as blackbox_exporter's", timeout)
	// A value too large for a Duration is clamped before it is one.
	if v, err := strconv.ParseFloat(header, 64); err == nil && v > 0 {
		timeout = time.Duration(min(v, defaultScrapeTimeout.Seconds()) * float64(time.Second))
		why = fmt.Sprintf("the scrape's X-Prometheus-Scrape-Timeout-Seconds %q, %v at most", header, defaultScrapeTimeout)
		if timeout > offset {
			timeout -= offset
			why += fmt.Sprintf(", less --scrape-timeout-offset %v: %v", offset, timeout)
		} else {
			why += fmt.Sprintf(", too short to take --scrape-timeout-offset %v from: %v", offset, timeout)
		}
	} else if header != "" {
		why = fmt.Sprintf("X-Prometheus-Scrape-Timeout-Seconds %q is not a positive number of seconds: %v", header, timeout)
	}
	switch {
	case module > 0 && module < timeout:
		timeout = module
		why += fmt.Sprintf("; the module's timeout %v is shorter", module)
	case module > 0:
		why += fmt.Sprintf("; the module's timeout %v is not shorter", module)
	}
	if max < timeout {
		return max, why + fmt.Sprintf("; --max-timeout %v caps it", max)
	}
	return timeout, why + fmt.Sprintf("; within --max-timeout %v", max)
}

// httpStatus is the HTTP status of a refusal.
func httpStatus(code codes.Code) int {
	switch code {
	case codes.InvalidArgument, codes.FailedPrecondition:
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
