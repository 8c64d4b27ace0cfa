package exporter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/audit"
	"github.com/netprobe/netprobe/internal/modules"
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
	modules   *modules.Store
	web       *webConfig
	// offset is taken off a scrape's timeout; maxTimeout is the longest
	// a probe may take.
	offset, maxTimeout time.Duration
	// public serves what guard guards to anyone.
	public bool
	logger *slog.Logger
}

// Prober runs the probes of /probe: the probe service.
type Prober interface {
	Connect(context.Context, *netprobev1.ConnectRequest) (*netprobev1.ConnectResponse, error)
	FetchTo(context.Context, *netprobev1.FetchRequest, service.Emit) error
}

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
	release, err := sc.admission.Admit(ctx, admission.Scrape)
	if err != nil {
		http.Error(w, status.Convert(err).Message(), httpStatus(status.Code(err)))
		return
	}
	defer release()

	timeout := scrapeTimeout(r.Header, sc.offset, m.Timeout, sc.maxTimeout)
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
	name, err := sc.admission.Identify(c)
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

// probe runs m against target through the probe service.
func (sc *scraper) probe(ctx context.Context, m *modules.Module, target *netprobev1.Target, timeout time.Duration) (*scrapeResult, error) {
	res := &scrapeResult{}
	if m.Err != nil {
		res.connect = &netprobev1.ConnectResponse{Error: &netprobev1.ProbeError{
			Stage: netprobev1.Stage_STAGE_SOCKET, Reason: netprobev1.Reason_REASON_OTHER, Message: m.Err.Error(),
		}}
		return res, nil
	}
	ctx = audit.WithVia(ctx, "/probe "+m.Name)
	if m.ClientCert != nil {
		ctx = service.WithIdentityGrant(ctx, modules.IdentityPrefix+m.Name)
	}
	connect, fetch := m.Request(target, timeout)
	if connect != nil {
		resp, err := sc.prober.Connect(ctx, connect)
		if err != nil {
			return res, err
		}
		res.connect = resp
		return res, nil
	}
	return res, sc.prober.FetchTo(ctx, fetch, res.keep)
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
