package server

import (
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protojson"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/buildinfo"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/service"
)

// recentProbesKept is how many probes the page lists.
const recentProbesKept = 100

// pageModulesListed is how many modules the page lists, in the order of
// their names, and as many of those of other probers: a file may hold
// thousands. probed --check-modules lists them all.
const pageModulesListed = 100

// recentProbe is one probe as the page lists it.
type recentProbe struct {
	ID      uint64
	Time    time.Time
	Via     string
	Caller  string
	Target  string
	Outcome string
	// Stage, Reason and Errno are the failure's, without their prefixes.
	Stage, Reason, Errno string
	Peer                 string
	Resolve, Connect     time.Duration
	TLS, FirstByte       time.Duration
	Total                time.Duration

	connect *netprobev1.ConnectResponse
	summary *netprobev1.FetchSummary
	err     *netprobev1.ProbeError
}

// recentProbes is a ring of the last probes, from gRPC and /probe alike.
type recentProbes struct {
	mu     sync.Mutex
	next   uint64
	probes []*recentProbe // oldest first once full, from start
	start  int
	size   int
}

func newRecentProbes(size int) *recentProbes {
	return &recentProbes{size: size, probes: make([]*recentProbe, 0, size)}
}

// add records the probe of r, whose target reads target.
func (rp *recentProbes) add(ctx context.Context, r *service.Report, target, outcome string) {
	p := &recentProbe{Time: time.Now(), Via: "gRPC " + r.Method, Caller: service.CallerFrom(ctx), Target: target,
		Outcome: outcome, Peer: r.Connect.GetPeerAddress(), Total: r.Duration, connect: r.Connect, summary: r.Summary, err: r.Error}
	if module, ok := ctx.Value(scrapeKey{}).(string); ok {
		p.Via = "/probe " + module
	}
	if p.Caller == "" {
		if pr, ok := peer.FromContext(ctx); ok {
			p.Caller = pr.Addr.String()
		}
	}
	if e := r.Error; e != nil {
		p.Stage = strings.TrimPrefix(e.GetStage().String(), "STAGE_")
		p.Reason = strings.TrimPrefix(e.GetReason().String(), "REASON_")
		p.Errno = e.GetErrno()
	}
	c := r.Connect
	p.Resolve, p.Connect = c.GetResolveDuration().AsDuration(), c.GetConnectDuration().AsDuration()
	for _, t := range []*netprobev1.TlsResult{c.GetTls(), r.Summary.GetTls()} {
		if t.GetHandshakeDuration() != nil {
			p.TLS = t.GetHandshakeDuration().AsDuration()
		}
	}
	p.FirstByte = r.Summary.GetTimeToFirstByte().AsDuration()

	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.next++
	p.ID = rp.next
	if len(rp.probes) < rp.size {
		rp.probes = append(rp.probes, p)
		return
	}
	rp.probes[rp.start] = p
	rp.start = (rp.start + 1) % rp.size
}

// list returns the probes kept, newest first.
func (rp *recentProbes) list() []*recentProbe {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	out := make([]*recentProbe, 0, len(rp.probes))
	for i := len(rp.probes) - 1; i >= 0; i-- {
		out = append(out, rp.probes[(rp.start+i)%len(rp.probes)])
	}
	return out
}

// get returns the probe with id, if it is still kept.
func (rp *recentProbes) get(id uint64) *recentProbe {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	for _, p := range rp.probes {
		if p.ID == id {
			return p
		}
	}
	return nil
}

//go:embed page/index.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"ms": func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
	},
	"clock": func(t time.Time) string { return t.UTC().Format("15:04:05.000") },
}).Parse(pageHTML))

// pageData is what the page shows.
type pageData struct {
	Version   string
	Health    string
	Listeners []string
	TLS       bool
	MutualTLS bool
	Tokens    bool
	Policy    []string
	Limits    []string
	Modules   []pageModule
	Skipped   []string
	// ModulesFile is the module file, and ModulesLeft and SkippedLeft how
	// many modules the page does not list.
	ModulesFile              string
	ModulesLeft, SkippedLeft int
	Probes                   []*recentProbe
	Now                      time.Time
}

type pageModule struct {
	Name, Prober, What string
}

// page serves /: probed at a glance, for a person, in any browser.
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	resp, err := s.health.Check(r.Context(), &healthpb.HealthCheckRequest{Service: netprobev1.ProbeService_ServiceDesc.ServiceName})
	health := resp.GetStatus().String()
	if err != nil {
		health = err.Error()
	}
	d := pageData{
		Version: buildinfo.Version(), Health: health, TLS: s.TLS(), MutualTLS: s.MutualTLS(), Tokens: s.Tokens(),
		Policy: s.PolicyRules(), Probes: s.recent.list(), Now: time.Now(),
		Limits: []string{
			fmt.Sprintf("%d probes at once, %d per caller", s.cfg.MaxInFlight, s.cfg.MaxInFlightPerCaller),
			fmt.Sprintf("%g probes a second per caller (burst %d); %g per scraper of /probe (burst %d)", s.cfg.Rate, s.cfg.Burst, s.cfg.ScrapeRate, s.cfg.ScrapeBurst),
			fmt.Sprintf("timeouts up to %v", s.cfg.MaxTimeout),
		},
	}
	for _, a := range s.cfg.Self {
		d.Listeners = append(d.Listeners, a.Network()+" "+a.String())
	}
	set := s.scraper.modules()
	names := set.Names()
	d.ModulesFile, d.ModulesLeft = s.cfg.ModulesFile, max(0, len(names)-pageModulesListed)
	for _, name := range names[:len(names)-d.ModulesLeft] {
		d.Modules = append(d.Modules, pageModule{Name: name, Prober: set.Modules[name].Prober, What: moduleSummary(set.Modules[name])})
	}
	skipped := slices.Sorted(maps.Keys(set.Skipped))
	d.SkippedLeft = max(0, len(skipped)-pageModulesListed)
	for _, name := range skipped[:len(skipped)-d.SkippedLeft] {
		d.Skipped = append(d.Skipped, name+" ("+set.Skipped[name]+")")
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTemplate.Execute(w, d); err != nil {
		s.logger.Error("page", "err", err)
	}
}

// moduleSummary says in a few words what a module does.
func moduleSummary(m *modules.Module) string {
	var parts []string
	if m.Err != nil {
		return "cannot run: " + m.Err.Error()
	}
	if m.Prober == "udp" {
		parts = append(parts, fmt.Sprintf("a datagram of %d bytes, then the answer", len(m.Payload)))
	}
	if m.TLS != nil {
		parts = append(parts, "TLS")
	}
	if n := len(m.Steps); n > 0 {
		parts = append(parts, fmt.Sprintf("a dialogue of %d steps", n))
	}
	if m.Timeout > 0 {
		parts = append(parts, "timeout "+m.Timeout.String())
	}
	if len(parts) == 0 {
		return "connect"
	}
	return strings.Join(parts, ", ")
}

// report serves /probes/ID: a recent probe's report, as the API's JSON.
func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	p := s.recent.get(id)
	if err != nil || p == nil {
		http.Error(w, "no such probe among the recent ones", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	opts := protojson.MarshalOptions{Multiline: true}
	var parts []string
	if p.connect != nil {
		b, _ := opts.Marshal(p.connect)
		parts = append(parts, `"connect": `+string(b))
	}
	if p.summary != nil {
		b, _ := opts.Marshal(p.summary)
		parts = append(parts, `"summary": `+string(b))
	}
	if p.err != nil {
		b, _ := opts.Marshal(p.err)
		parts = append(parts, `"error": `+string(b))
	}
	fmt.Fprintf(w, "{\n%s\n}\n", strings.Join(parts, ",\n"))
}
