// Package statuspage is probed at a glance, for a person in a browser:
// first what is failing now, then the last probes from every way in, each
// linked to its report, then its health, listeners, policy, limits,
// modules and the state of the files it read. It is served on the metrics
// listener (see exporter), server-rendered, with no script; it fits a
// window 1280 px wide and a phone's.
package statuspage

import (
	_ "embed"
	"fmt"
	"html/template"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/audit"
	"github.com/netprobe/netprobe/internal/modules"
)

// modulesListed is how many modules the page lists, in the order of their
// names, and as many of those of other probers: a file may hold
// thousands. probed --check-modules lists them all.
const modulesListed = 100

// failingListed is how many failing targets the page lists, the newest
// runs of failures first; the Recorder keeps audit.FailingKept.
const failingListed = 100

//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"ms":     ms,
	"clock":  func(t time.Time) string { return t.UTC().Format("15:04:05.000") },
	"when":   when,
	"age":    func(now, t time.Time) string { return now.Sub(t).Round(time.Second).String() },
	"phases": phases,
}).Parse(pageHTML))

// ms is d in milliseconds, or "" for none.
func ms(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}

// when is t in UTC to the second, with its date unless it is now's.
func when(now, t time.Time) string {
	now, t = now.UTC(), t.UTC()
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}

// phases says how long a probe's phases took, in milliseconds.
func phases(p *audit.Probe) string {
	var parts []string
	for _, ph := range []struct {
		name string
		d    time.Duration
	}{{"resolve", p.Resolve}, {"connect", p.Connect}, {"tls", p.TLS}, {"first byte", p.FirstByte}} {
		if ph.d != 0 {
			parts = append(parts, ph.name+" "+ms(ph.d))
		}
	}
	return strings.Join(parts, " · ")
}

// Status is what the page shows of the server besides its probes.
type Status struct {
	Version, Health string
	// Listeners are the addresses served, as "network address".
	Listeners []string
	// TLS, MutualTLS and Tokens say how gRPC callers are authenticated.
	TLS, MutualTLS, Tokens bool
	// Policy are the target policy's rules, in the order they are judged;
	// Limits say what a caller may do, a line each.
	Policy, Limits []string
	// Modules are /probe's, from ModulesFile ("" for the defaults).
	Modules     *modules.Set
	ModulesFile string
	// Files are the files probed read, as it last loaded each.
	Files []FileState
	// Node and Labels ("KEY=VALUE", sorted) are this node's in a fleet;
	// Peers its peers, as it last saw them (none without --peers).
	Node   string
	Labels []string
	Peers  []PeerState
}

// PeerState is a peer of this node as it last saw it.
type PeerState struct {
	// Node is the name it gave ("" until it answered), Addr where it is,
	// Labels its labels, "KEY=VALUE" sorted.
	Node, Addr string
	Labels     []string
	// Self is true for this node, under one of its addresses.
	Self bool
	// Up is whether it answered when last asked, Err why not;
	// LastContact is when it last answered.
	Up          bool
	LastContact time.Time
	Err         string
}

// FileState is a file probed reads (its policy, tokens, modules, TLS
// certificates, ...) as it last loaded it.
type FileState struct {
	// Name says what the file is, the flag that gives it, such as
	// "modules-file"; Path is where it is.
	Name, Path string
	// Loaded is when it last loaded: what it held then is in use.
	Loaded time.Time
	// OK is whether the last try to load it succeeded; Err says why not.
	OK  bool
	Err string
}

// Page serves the page at / and the probes' reports at /probes/ID.
type Page struct {
	probes *audit.Recorder
	status func() Status
	logger *slog.Logger
}

// New returns the page of the probes probes recorded, with status as it is
// when the page is asked for.
func New(probes *audit.Recorder, status func() Status, logger *slog.Logger) *Page {
	return &Page{probes: probes, status: status, logger: logger}
}

// Routes puts the page on mux, each route through guard: "GET /" and
// "GET /probes/{id}".
func (pg *Page) Routes(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	mux.Handle("GET /{$}", guard(http.HandlerFunc(pg.page)))
	mux.Handle("GET /probes/{id}", guard(http.HandlerFunc(pg.report)))
}

// peersListed bounds the peers the page lists: a fleet may have
// thousands.
const peersListed = 200

// data is what the page shows.
type data struct {
	Status
	Modules []module
	Skipped []string
	// ModulesLeft and SkippedLeft are how many modules the page does not
	// list.
	ModulesLeft, SkippedLeft int
	// Failing are the targets failing now, at most failingListed of them;
	// FailingLeft is how many more there are, Forgotten how many the
	// Recorder forgot to stay within its bound.
	Failing     []audit.Failing
	FailingLeft int
	Forgotten   uint64
	// PeersLeft is how many peers the page does not list.
	PeersLeft int
	Probes    []*audit.Probe
	Now       time.Time
}

type module struct {
	Name, Prober, What string
}

// page serves /.
func (pg *Page) page(w http.ResponseWriter, r *http.Request) {
	d := data{Status: pg.status(), Probes: pg.probes.Recent(), Now: time.Now()}
	d.Failing, d.Forgotten = pg.probes.Failing()
	d.FailingLeft = max(0, len(d.Failing)-failingListed)
	d.Failing = d.Failing[:len(d.Failing)-d.FailingLeft]
	d.PeersLeft = max(0, len(d.Peers)-peersListed)
	d.Peers = d.Peers[:len(d.Peers)-d.PeersLeft]
	set := d.Status.Modules
	names := set.Names()
	d.ModulesLeft = max(0, len(names)-modulesListed)
	for _, name := range names[:len(names)-d.ModulesLeft] {
		d.Modules = append(d.Modules, module{Name: name, Prober: set.Modules[name].Prober, What: moduleSummary(set.Modules[name])})
	}
	skipped := slices.Sorted(maps.Keys(set.Skipped))
	d.SkippedLeft = max(0, len(skipped)-modulesListed)
	for _, name := range skipped[:len(skipped)-d.SkippedLeft] {
		d.Skipped = append(d.Skipped, name+" ("+set.Skipped[name]+")")
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTemplate.Execute(w, d); err != nil {
		pg.logger.Error("page", "err", err)
	}
}

// moduleSummary says in a few words what a module does.
func moduleSummary(m *modules.Module) string {
	var parts []string
	if m.Err != nil {
		return "cannot run: " + m.Err.Error()
	}
	switch {
	case m.Prober == "udp":
		parts = append(parts, fmt.Sprintf("a datagram of %d bytes, then the answer", len(m.Payload)))
	case m.ICMP != nil:
		parts = append(parts, fmt.Sprintf("an ICMP echo of %d bytes", m.ICMP.GetPayloadBytes()))
		if m.ICMP.Ttl != nil {
			parts = append(parts, fmt.Sprintf("TTL %d", m.ICMP.GetTtl()))
		}
		if m.ICMP.GetDontFragment() {
			parts = append(parts, "not fragmented")
		}
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
	if tr := m.Trace; tr != nil {
		when := "on failure"
		if tr.GetWhen() == netprobev1.TraceWhen_TRACE_WHEN_ALWAYS {
			when = "always"
		}
		parts = append(parts, fmt.Sprintf("traced %s (%d hops at most, %d probes a hop, within %v)", when, tr.GetMaxHops(), tr.GetProbesPerHop(), tr.GetTimeout().AsDuration()))
	}
	if len(parts) == 0 {
		return "connect"
	}
	return strings.Join(parts, ", ")
}

// report serves /probes/ID: a recent probe's report, as the API's JSON, or
// the latest failure of a target failing now, cut to its error.
func (pg *Page) report(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	p := pg.probes.Lookup(id)
	if err != nil || p == nil {
		http.Error(w, "no such probe among the recent ones", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	opts := protojson.MarshalOptions{Multiline: true}
	var parts []string
	if p.ConnectResponse != nil {
		b, _ := opts.Marshal(p.ConnectResponse)
		parts = append(parts, `"connect": `+string(b))
	}
	if p.Summary != nil {
		b, _ := opts.Marshal(p.Summary)
		parts = append(parts, `"summary": `+string(b))
	}
	if p.Error != nil {
		b, _ := opts.Marshal(p.Error)
		parts = append(parts, `"error": `+string(b))
	}
	fmt.Fprintf(w, "{\n%s\n}\n", strings.Join(parts, ",\n"))
}
