package probemetrics

import (
	"bytes"
	"fmt"
	"io"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/audit"
)

// debugShown bounds what the debug page shows of each step's bytes, sent
// or received, and of each group of a match; the rest is counted. The
// page of a probe holds at most the module's 64 steps of it.
const debugShown = 1024

// clipped is the first debugShown bytes of some, and how many more there
// were.
type clipped struct {
	b    []byte
	more int
}

func (c *clipped) add(b []byte) {
	n := min(len(b), debugShown-len(c.b))
	c.b = append(c.b, b[:n]...)
	c.more += len(b) - n
}

// String is the bytes as Go-quoted text, and how many more there were.
func (c clipped) String() string {
	s := strconv.Quote(string(c.b))
	if c.more > 0 {
		s += fmt.Sprintf(" and %d bytes more", c.more)
	}
	return s
}

func clip(b []byte) clipped {
	var c clipped
	c.add(b)
	return c
}

// dialogue is what a Fetch received, by the expect step that was waiting
// for it (received[len(steps)] after the last, or without steps), and
// what each expect matched. Its methods do nothing on a nil dialogue: a
// scrape without debug keeps none.
type dialogue struct {
	steps    []*netprobev1.Step
	received []clipped
	matched  map[int]*netprobev1.ExpectMatch
	// next is the step after the last that matched.
	next int
}

func isExpect(s *netprobev1.Step) bool {
	switch s.GetAction().(type) {
	case *netprobev1.Step_Expect, *netprobev1.Step_ExpectLine:
		return true
	}
	return false
}

// waiting is the expect step waiting for the bytes that arrive now, or
// len(steps) when none is.
func (d *dialogue) waiting() int {
	for i := d.next; i < len(d.steps); i++ {
		if isExpect(d.steps[i]) {
			return i
		}
	}
	return len(d.steps)
}

func (d *dialogue) receive(b []byte) {
	if d != nil {
		d.received[d.waiting()].add(b)
	}
}

func (d *dialogue) match(m *netprobev1.ExpectMatch) {
	if s := int(m.GetStep()); d != nil && s < len(d.steps) {
		d.matched[s] = m
		d.next = s + 1
	}
}

// WriteDebug writes the page debug=true answers: the probe's log, how its
// timeout was chosen, its dialogue as text, the metrics the scrape would
// have had, the module as netprobe runs it, and the probe service's
// report.
func (r *Result) WriteDebug(w io.Writer, log []byte, timeout string, reg *prometheus.Registry) {
	fmt.Fprintf(w, "Logs for the probe:\n%s\nTimeout: %s\n\n", log, timeout)
	r.writeDialogue(w)
	r.writePath(w)
	fmt.Fprint(w, "\nMetrics that would have been returned:\n")
	families, err := reg.Gather()
	if err != nil {
		fmt.Fprintln(w, err)
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		enc.Encode(f)
	}
	fmt.Fprint(w, "\nModule configuration, as netprobe runs it:\n")
	y := yaml.NewEncoder(w)
	y.SetIndent(2)
	if err := y.Encode(moduleView(r)); err != nil {
		fmt.Fprintln(w, err)
	}
	fmt.Fprintln(w, "\nThe probe's report:")
	opts := protojson.MarshalOptions{Multiline: true}
	if r.connect != nil {
		b, _ := opts.Marshal(r.connect)
		fmt.Fprintf(w, "connect: %s\n", b)
	}
	if r.summary != nil {
		b, _ := opts.Marshal(r.summary)
		fmt.Fprintf(w, "summary: %s\n", b)
	}
}

// writeEcho writes an ICMP echo and its reply, or why none came: an ICMP
// error in answer names its sender, type and code.
func (r *Result) writeEcho(w io.Writer) {
	c := r.connect
	e := c.GetIcmp()
	switch e.GetSocket() {
	case netprobev1.IcmpSocket_ICMP_SOCKET_UNSPECIFIED:
		// No socket: nothing went out.
		fmt.Fprintf(w, "  no echo sent to %s\n", c.GetPeerAddress())
	default:
		kind := map[netprobev1.IcmpSocket]string{netprobev1.IcmpSocket_ICMP_SOCKET_DATAGRAM: "datagram", netprobev1.IcmpSocket_ICMP_SOCKET_RAW: "raw"}[e.GetSocket()]
		fmt.Fprintf(w, "  echo of %d bytes (id %d, sequence %d) to %s from %s, on a %s ICMP socket\n",
			e.GetPayloadBytes(), e.GetId(), e.GetSequence(), c.GetPeerAddress(), c.GetLocalAddress(), kind)
	}
	if pe := c.GetError(); pe != nil {
		if ie := pe.GetIcmp(); ie != nil {
			fmt.Fprintf(w, "  ICMP error from %s: type %d, code %d\n", ie.GetAddress(), ie.GetIcmpType(), ie.GetIcmpCode())
		}
		fmt.Fprintf(w, "  failed: %s %s: %s\n", pe.GetStage(), pe.GetReason(), pe.GetMessage())
		return
	}
	fmt.Fprintf(w, "  reply from %s after %v, TTL %d\n", e.GetReplyAddress(), e.GetRtt().AsDuration(), e.GetReplyTtl())
}

// writePath writes the probe's trace, when it had one: where it stopped,
// and each TTL tried (at most the service's 64), as the report has it.
func (r *Result) writePath(w io.Writer) {
	p := r.connect.GetPath()
	if p == nil {
		return
	}
	fmt.Fprintf(w, "\nPath to %s from %s: %v after %v of its %v", p.GetDestination(), p.GetSource(), p.GetEnd(),
		p.GetDuration().AsDuration(), p.GetTimeout().AsDuration())
	if !p.GetFlowHeld() && len(p.GetHops()) > 0 {
		fmt.Fprint(w, "; NOT on one flow: hops may be on different paths")
	}
	fmt.Fprintln(w)
	if e := p.GetError(); e != nil {
		fmt.Fprintf(w, "  no trace: %s %s: %s\n", e.GetStage(), e.GetReason(), e.GetMessage())
	}
	if where := audit.StoppedAfter(p); where != "" {
		fmt.Fprintf(w, "  stopped after %s\n", where)
	}
	for _, h := range p.GetHops() {
		addr := h.GetAddress()
		if addr == "" {
			addr = "*"
		}
		fmt.Fprintf(w, "  hop %d %s %v", h.GetTtl(), addr, h.GetAnswer())
		if h.GetIcmpType() != 0 || h.GetIcmpCode() != 0 {
			fmt.Fprintf(w, " (ICMP type %d, code %d)", h.GetIcmpType(), h.GetIcmpCode())
		}
		fmt.Fprintf(w, ", %d of %d answered", h.GetAnswered(), h.GetSent())
		for _, d := range h.GetRtts() {
			fmt.Fprintf(w, " %v", d.AsDuration())
		}
		fmt.Fprintln(w)
	}
}

// writeDialogue writes each step of the module, and what it sent,
// received and matched, as Go-quoted text.
func (r *Result) writeDialogue(w io.Writer) {
	d := r.dialogue
	pe := r.Error()
	fmt.Fprintf(w, "Dialogue (bytes as Go-quoted text; the first %d of each step's, sent or received, and of each group):\n", debugShown)
	c := r.connect
	switch {
	case r.failure != nil:
		fmt.Fprintf(w, "  nothing dialled: %s\n", pe.GetMessage())
		return
	case c == nil:
		return
	case c.GetPeerAddress() == "":
		fmt.Fprintf(w, "  no connection: %s %s: %s\n", pe.GetStage(), pe.GetReason(), pe.GetMessage())
		return
	}
	if e := c.GetIcmp(); e != nil {
		r.writeEcho(w)
		return
	}
	fmt.Fprintf(w, "  connected to %s from %s\n", c.GetPeerAddress(), c.GetLocalAddress())
	if t := c.GetTls(); t != nil {
		fmt.Fprintf(w, "  TLS handshake: %s, verified %v\n", t.GetVersion(), t.GetVerified())
	}
	if e := c.GetError(); e != nil {
		fmt.Fprintf(w, "  failed: %s %s: %s\n", e.GetStage(), e.GetReason(), e.GetMessage())
		return
	}
	// The dialogue went up to stop: the step that failed, or else the
	// expect that was waiting when the probe ended.
	stop := len(d.steps)
	switch {
	case pe != nil && pe.Step != nil:
		stop = int(pe.GetStep())
	case pe != nil:
		stop = d.waiting()
	}
	var last *netprobev1.ExpectMatch
	for i, st := range d.steps {
		fmt.Fprintf(w, "  step %d ", i)
		switch a := st.GetAction().(type) {
		case *netprobev1.Step_Send:
			fmt.Fprintf(w, "send %s", clip(a.Send))
		case *netprobev1.Step_SendTemplate:
			fmt.Fprintf(w, "send_template %q", a.SendTemplate)
			if i < stop {
				fmt.Fprintf(w, ": %s", clip(r.module.Expand(int(last.GetStep()), a.SendTemplate, last.GetGroups())))
			}
		case *netprobev1.Step_StartTls:
			fmt.Fprint(w, "start_tls")
			if t := r.summary.GetTls(); i < stop && t != nil {
				fmt.Fprintf(w, ": %s, verified %v", t.GetVersion(), t.GetVerified())
			}
		case *netprobev1.Step_Expect:
			fmt.Fprintf(w, "expect %q", a.Expect)
		case *netprobev1.Step_ExpectLine:
			fmt.Fprintf(w, "expect_line %q", a.ExpectLine)
		}
		if rc := d.received[i]; len(rc.b) > 0 || rc.more > 0 {
			fmt.Fprintf(w, "\n    received %s", rc)
		}
		if m := d.matched[i]; m != nil {
			last = m
			// A group a line: each may be debugShown bytes, four times
			// as long quoted, and a match may have many.
			for g, b := range m.GetGroups() {
				fmt.Fprintf(w, "\n    matched [%d] %s", g, clip(b))
			}
		}
		switch {
		case i == stop && pe != nil:
			fmt.Fprintf(w, "\n    failed: %s %s: %s", pe.GetStage(), pe.GetReason(), pe.GetMessage())
		case i > stop:
			fmt.Fprint(w, " (not reached)")
		case i < stop && !isExpect(st):
			fmt.Fprint(w, " (done)")
		}
		fmt.Fprintln(w)
	}
	if len(r.module.Payload) > 0 {
		fmt.Fprintf(w, "  sent %s\n", clip(r.module.Payload))
	}
	if rc := d.received[len(d.steps)]; len(rc.b) > 0 || rc.more > 0 {
		fmt.Fprintf(w, "  received %s\n", rc)
	}
	if s := r.summary; s != nil {
		fmt.Fprintf(w, "  %d bytes sent and %d received in all; %s\n", s.GetBytesSent(), s.GetBytesReceived(), s.GetEndReason())
	}
}

// moduleYAML is the module as netprobe runs it: blackbox_exporter's
// options as netprobe reads them, and the steps its query_response
// became. No key or certificate is shown, only that there is one.
type moduleYAML struct {
	Name     string           `yaml:"name"`
	Prober   string           `yaml:"prober"`
	Timeout  string           `yaml:"timeout,omitempty"`
	IPFamily string           `yaml:"ip_family,omitempty"`
	Source   string           `yaml:"source_ip_address,omitempty"`
	TLS      map[string]any   `yaml:"tls,omitempty"`
	ICMP     map[string]any   `yaml:"icmp,omitempty"`
	Steps    []map[string]any `yaml:"steps,omitempty"`
	Netprobe map[string]any   `yaml:"netprobe,omitempty"`
	Error    string           `yaml:"error,omitempty"`
}

func moduleView(r *Result) *moduleYAML {
	m := r.module
	out := &moduleYAML{Name: m.Name, Prober: m.Prober, Netprobe: map[string]any{}}
	if m.Timeout > 0 {
		out.Timeout = m.Timeout.String()
	}
	if m.Family != netprobev1.IpFamily_IP_FAMILY_UNSPECIFIED {
		out.IPFamily = m.Family.String()
	}
	if m.Source.IsValid() {
		out.Source = m.Source.String()
	}
	if t := m.TLS; t != nil {
		out.TLS = map[string]any{"server_name": t.GetServerName(), "insecure_skip_verify": t.GetInsecureSkipVerify()}
		if n := bytes.Count(t.GetCaBundle(), []byte("-----BEGIN CERTIFICATE-----")); n > 0 {
			out.TLS["ca"] = fmt.Sprintf("%d certificates", n)
		}
		if m.ClientCert != nil {
			out.TLS["client_certificate"] = "presented as the client identity module/" + m.Name
		}
		for k, v := range map[string]netprobev1.TlsVersion{"min_version": t.GetMinVersion(), "max_version": t.GetMaxVersion()} {
			if v != netprobev1.TlsVersion_TLS_VERSION_UNSPECIFIED {
				out.TLS[k] = v.String()
			}
		}
		if len(m.ALPN) > 0 {
			out.TLS["alpn"] = m.ALPN
		}
	}
	if o := m.ICMP; o != nil {
		out.ICMP = map[string]any{"payload_bytes": o.GetPayloadBytes(), "dont_fragment": o.GetDontFragment(), "ttl": "the system's default"}
		if o.Ttl != nil {
			out.ICMP["ttl"] = o.GetTtl()
		}
	}
	for i, st := range m.Steps {
		s := map[string]any{}
		switch a := st.GetAction().(type) {
		case *netprobev1.Step_Send:
			s["send"] = string(a.Send)
		case *netprobev1.Step_SendTemplate:
			s["send_template"] = a.SendTemplate
		case *netprobev1.Step_StartTls:
			s["start_tls"] = true
		case *netprobev1.Step_Expect:
			s["expect"] = a.Expect
		case *netprobev1.Step_ExpectLine:
			s["expect_line"] = a.ExpectLine
		}
		if labels := m.Labels[i]; len(labels) > 0 {
			l := map[string]string{}
			for _, label := range labels {
				l[label.Name] = label.Value
			}
			s["labels"] = l
		}
		out.Steps = append(out.Steps, s)
	}
	if m.ReadTimeout > 0 {
		out.Netprobe["read_timeout"] = m.ReadTimeout.String()
	}
	if m.MaxBytes > 0 {
		out.Netprobe["max_bytes"] = m.MaxBytes
	}
	if m.ReverseLookup {
		out.Netprobe["reverse_lookup"] = true
	}
	if len(m.Payload) > 0 {
		out.Netprobe["payload"] = string(m.Payload)
	}
	if tr := m.Trace; tr != nil {
		out.Netprobe["trace"] = map[string]any{"when": tr.GetWhen().String(), "max_hops": tr.GetMaxHops(),
			"probes_per_hop": tr.GetProbesPerHop(), "timeout": tr.GetTimeout().AsDuration().String()}
	}
	if m.Err != nil {
		out.Error = m.Err.Error()
	}
	return out
}
