package service

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// violations collects what is wrong with a request, so one answer names
// the bad fields: the first maxViolations of them, and how many more. A
// request of 60,000 bad ALPN names once made as many violations, and a
// 29 MB answer and log line.
type violations struct {
	list []*errdetails.BadRequest_FieldViolation
	// more counts the violations past maxViolations, not kept.
	more int
}

// Bounds of a refusal: it names at most maxViolations fields, each
// description cut to maxViolationBytes (quote cuts what it repeats of the
// caller's words shorter still), so that an INVALID_ARGUMENT answer, and
// its log line, is a few KiB whatever the request.
const (
	maxViolations     = 20
	maxViolationBytes = 200
)

func (v *violations) add(field, format string, args ...any) {
	if len(v.list) >= maxViolations {
		v.more++
		return
	}
	d := fmt.Sprintf(format, args...)
	if len(d) > maxViolationBytes {
		cut := maxViolationBytes
		for cut > 0 && !utf8.RuneStart(d[cut]) {
			cut--
		}
		d = d[:cut] + "..."
	}
	v.list = append(v.list, &errdetails.BadRequest_FieldViolation{Field: field, Description: d})
}

// merge adds sub's violations, their fields under prefix.
func (v *violations) merge(prefix string, sub *violations) {
	for _, fv := range sub.list {
		v.add(prefix+fv.Field, "%s", fv.Description)
	}
	v.more += sub.more
}

// err returns nil when nothing was added, else INVALID_ARGUMENT with a
// BadRequest detail.
func (v *violations) err() error {
	if len(v.list) == 0 {
		return nil
	}
	msgs := make([]string, len(v.list), len(v.list)+1)
	for i, fv := range v.list {
		msgs[i] = fv.Field + ": " + fv.Description
	}
	if v.more > 0 {
		msgs = append(msgs, fmt.Sprintf("and %d more", v.more))
	}
	st := status.New(codes.InvalidArgument, "invalid request: "+strings.Join(msgs, "; "))
	st, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: v.list})
	if err != nil {
		return status.Error(codes.Internal, "build error details: "+err.Error())
	}
	return st.Err()
}

// target is a validated Target.
type target struct {
	host    string
	literal netip.Addr // valid when host is an IP address
	port    uint16     // 0 until the service is looked up
	service string
	source  netip.Addr // valid when a source address is asked for
	network string     // "tcp", "udp" or "icmp"
	family  netprobev1.IpFamily
}

// maxHostLength is the longest DNS name (RFC 1035, without the final dot).
const maxHostLength = 253

func validateTarget(v *violations, t *netprobev1.Target) target {
	if t == nil {
		v.add("target", "is required")
		return target{}
	}
	out := target{host: t.GetHost(), service: t.GetService(), family: t.GetIpFamily()}
	switch {
	case out.host == "":
		v.add("target.host", "is required: a DNS name or an IP address")
	default:
		if h := strings.TrimSuffix(strings.TrimPrefix(out.host, "["), "]"); h != out.host {
			// Accept "[::1]" as people copy it from URLs, but only around an
			// IPv6 address.
			if a, err := netip.ParseAddr(h); err == nil && a.Is6() {
				out.host = h
			}
		}
		if a, err := netip.ParseAddr(out.host); err == nil {
			out.literal = a.Unmap()
			if msg := checkZone(a); msg != "" {
				v.add("target.host", "%s: %s", quote(t.GetHost()), msg)
			}
		} else if msg := checkHostName(out.host); msg != "" {
			v.add("target.host", "%s is not an IP address or a valid DNS name: %s", quote(t.GetHost()), msg)
		}
	}
	switch t.GetNetwork() {
	case netprobev1.Network_NETWORK_UNSPECIFIED, netprobev1.Network_NETWORK_TCP:
		out.network = "tcp"
	case netprobev1.Network_NETWORK_UDP:
		out.network = "udp"
	case netprobev1.Network_NETWORK_ICMP:
		out.network = "icmp"
	default:
		v.add("target.network", "unknown network %d: TCP (NETWORK_TCP), UDP (NETWORK_UDP) or ICMP (NETWORK_ICMP)", t.GetNetwork())
	}
	switch out.family {
	case netprobev1.IpFamily_IP_FAMILY_UNSPECIFIED, netprobev1.IpFamily_IP_FAMILY_PREFER_IPV4, netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6:
	case netprobev1.IpFamily_IP_FAMILY_IPV4:
		if out.literal.Is6() {
			v.add("target.ip_family", "IPv4 asked for, but host %s is an IPv6 address", out.host)
		}
	case netprobev1.IpFamily_IP_FAMILY_IPV6:
		if out.literal.Is4() {
			v.add("target.ip_family", "IPv6 asked for, but host %s is an IPv4 address", out.host)
		}
	default:
		v.add("target.ip_family", "unknown IP family %d", out.family)
	}
	switch p := t.GetPort(); {
	case out.network == "icmp":
		// An echo goes to an address, not a port: a port given is a
		// mistake to say, not one to ignore.
		if p != 0 {
			v.add("target.port", "an ICMP echo has no port")
		}
		if out.service != "" {
			v.add("target.service", "an ICMP echo has no service")
			out.service = ""
		}
	case p > 65535:
		v.add("target.port", "%d is out of range 1-65535", p)
	case p == 0 && out.service == "":
		v.add("target.port", "a port (1-65535) or a service name is required")
	default:
		out.port = uint16(p)
	}
	if out.service != "" {
		if msg := checkServiceName(out.service); msg != "" {
			v.add("target.service", "%s is not a valid service name: %s", quote(out.service), msg)
		}
	}
	return out
}

// validateSource checks the source address a target asks for against the
// addresses the server may bind, and holds the target to its family.
func (s *Server) validateSource(v *violations, field string, t *target, source string) {
	if source == "" {
		return
	}
	a, err := netip.ParseAddr(source)
	if err != nil || a.Zone() != "" {
		v.add(field, "%s is not an IP address", quote(source))
		return
	}
	a = a.Unmap()
	if !slices.ContainsFunc(s.cfg.AllowedSources, func(p netip.Prefix) bool { return p.Contains(a) }) {
		v.add(field, "%s is not an address this server may bind (probed --allow-source)", a)
		return
	}
	family := netprobev1.IpFamily_IP_FAMILY_IPV6
	if a.Is4() {
		family = netprobev1.IpFamily_IP_FAMILY_IPV4
	}
	switch {
	case t.literal.IsValid() && t.literal.Is4() != a.Is4():
		v.add(field, "%s is not of the family of host %s", a, t.literal)
	case (t.family == netprobev1.IpFamily_IP_FAMILY_IPV4 || t.family == netprobev1.IpFamily_IP_FAMILY_IPV6) && t.family != family:
		v.add(field, "%s is not of the family ip_family asks for", a)
	}
	// A name is resolved to the source's family alone.
	t.source, t.family = a, family
}

// quote quotes what a caller sent for an error message, cut to what
// quotes in 64 bytes (or fewer, not to cut a character or an escape in
// two): the message repeats the caller's words, not all of them.
// Printable characters are shown as they are, others escaped, which makes
// 64 bytes of control characters four times as long: the cut is made on
// what is shown, not on what was sent.
func quote(s string) string {
	const most = 64
	shown, cut := 0, 0
	for cut < len(s) {
		_, size := utf8.DecodeRuneInString(s[cut:])
		w := len(strconv.Quote(s[cut:cut+size])) - 2
		if shown+w > most {
			return strconv.Quote(s[:cut]) + fmt.Sprintf("... (%d bytes)", len(s))
		}
		shown, cut = shown+w, cut+size
	}
	return strconv.Quote(s)
}

// badChar names, for an error message, the first character of s that ok
// does not allow: as itself when printable ('ü'), escaped when not
// ('\u202e'), or as a byte where s is not UTF-8 (byte 0xfc); "" when ok
// allows them all. ok is asked of ASCII bytes only: nothing else is
// allowed.
func badChar(s string, ok func(byte) bool) string {
	for i := 0; i < len(s); i++ {
		if s[i] < utf8.RuneSelf && ok(s[i]) {
			continue
		}
		if r, size := utf8.DecodeRuneInString(s[i:]); r != utf8.RuneError || size > 1 {
			return fmt.Sprintf("character %q", r)
		}
		return fmt.Sprintf("byte 0x%02x, which is not UTF-8,", s[i])
	}
	return ""
}

// maxZoneLength is the longest interface name (IFNAMSIZ less its NUL).
const maxZoneLength = 15

// checkZone says what is wrong with an IPv6 address's zone, or "" when
// nothing is: a zone names an interface, and only a link-local address
// needs one.
func checkZone(a netip.Addr) string {
	zone := a.Zone()
	switch {
	case zone == "":
		return ""
	case !a.IsLinkLocalUnicast() && !a.IsLinkLocalMulticast() && !a.IsInterfaceLocalMulticast():
		return "a zone applies to link-local addresses only"
	case len(zone) > maxZoneLength:
		return fmt.Sprintf("the zone is longer than %d characters", maxZoneLength)
	}
	if c := badChar(zone, func(c byte) bool { return isNameChar(c) || c == '.' }); c != "" {
		return c + " is not allowed in a zone"
	}
	return ""
}

// checkHostName says what is wrong with a DNS name, or "" when nothing is.
// It admits underscores, which real names (SRV owners, some internal hosts)
// carry.
func checkHostName(h string) string {
	name := strings.TrimSuffix(h, ".")
	if len(name) > maxHostLength {
		return fmt.Sprintf("longer than %d characters", maxHostLength)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return "empty label"
		}
		if len(label) > 63 {
			return "a label is longer than 63 characters"
		}
		if c := badChar(label, isNameChar); c != "" {
			if strings.IndexFunc(label, func(r rune) bool { return r >= utf8.RuneSelf && unicode.IsLetter(r) }) >= 0 {
				// An internationalized name is asked for by its ASCII form.
				return c + " is not allowed: a name with letters beyond ASCII is given in its IDNA form (xn--...)"
			}
			return c + " is not allowed"
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "a label starts or ends with '-'"
		}
	}
	return ""
}

func isNameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// checkServiceName says what is wrong with a service name (services(5):
// letters, digits and a few punctuation marks, no spaces), or "" when
// nothing is.
func checkServiceName(s string) string {
	if len(s) > 64 {
		return "longer than 64 characters"
	}
	if c := badChar(s, func(c byte) bool { return isNameChar(c) || c == '.' || c == '+' || c == '/' }); c != "" {
		return c + " is not allowed"
	}
	if strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) < 0 {
		// RFC 6335: a name has a letter. A number is a port, as a
		// /probe target's HOST:PORT makes it when it is one.
		if n, err := strconv.ParseUint(s, 10, 16); err == nil && n > 0 {
			return "a number: a port goes in port"
		}
		return "a number, and out of the ports' range 1-65535"
	}
	return ""
}

// validateTimeout returns the probe's budget: the request's timeout, or the
// default when it sets none.
func (s *Server) validateTimeout(v *violations, field string, d *durationpb.Duration) time.Duration {
	if d == nil {
		return s.cfg.DefaultTimeout
	}
	if err := d.CheckValid(); err != nil {
		v.add(field, "%v", err)
		return 0
	}
	t := d.AsDuration()
	switch {
	case t <= 0:
		v.add(field, "must be positive, got %v", t)
	case t > s.cfg.MaxTimeout:
		v.add(field, "%v is over the server's maximum of %v", t, s.cfg.MaxTimeout)
	}
	return t
}

func (s *Server) validateConnect(req *netprobev1.ConnectRequest) (connectParams, error) {
	var v violations
	t := validateTarget(&v, req.GetTarget())
	s.validateSource(&v, "target.source_address", &t, req.GetTarget().GetSourceAddress())
	timeout := s.validateTimeout(&v, "timeout", req.GetTimeout())
	tp := validateTLS(&v, "tls", req.GetTls(), t)
	tr := s.validateTrace(&v, "trace", req.GetTrace(), t)
	ip := validateICMP(&v, "icmp", req.GetIcmp(), t)
	if t.network == "icmp" && tp != nil {
		v.add("tls", "an ICMP echo has no TLS handshake")
	}
	return connectParams{target: t, timeout: timeout, tls: tp, trace: tr, icmp: ip}, v.err()
}

// connectParams is a validated ConnectRequest.
type connectParams struct {
	target  target
	timeout time.Duration
	tls     *tlsParams
	trace   *traceParams
	icmp    *icmpParams
}

// traceParams are validated TraceOptions.
type traceParams struct {
	always          bool
	maxHops, perHop int
	timeout         time.Duration
	// names looks the hops' addresses up by address.
	names bool
}

// Limits of a trace (TraceOptions), as the API documents them.
const (
	defaultTraceHops    = 30
	maxTraceHops        = 64
	maxProbesPerHop     = 10
	defaultTraceTimeout = 10 * time.Second
)

// validateTrace checks a request's trace options; nil when it asks for no
// trace.
func (s *Server) validateTrace(v *violations, field string, o *netprobev1.TraceOptions, t target) *traceParams {
	if o == nil {
		return nil
	}
	tr := &traceParams{maxHops: defaultTraceHops, perHop: 1, timeout: min(defaultTraceTimeout, s.cfg.MaxTimeout), names: o.GetNames()}
	if t.network != "tcp" && t.network != "udp" {
		v.add(field, "a trace follows TCP and UDP targets only")
	}
	switch o.GetWhen() {
	case netprobev1.TraceWhen_TRACE_WHEN_UNSPECIFIED, netprobev1.TraceWhen_TRACE_WHEN_ON_FAILURE:
	case netprobev1.TraceWhen_TRACE_WHEN_ALWAYS:
		tr.always = true
	default:
		v.add(field+".when", "unknown value %d: TRACE_WHEN_ON_FAILURE or TRACE_WHEN_ALWAYS", o.GetWhen())
	}
	switch n := o.GetMaxHops(); {
	case n > maxTraceHops:
		v.add(field+".max_hops", "%d is over the maximum of %d", n, maxTraceHops)
	case n > 0:
		tr.maxHops = int(n)
	}
	switch n := o.GetProbesPerHop(); {
	case n > maxProbesPerHop:
		v.add(field+".probes_per_hop", "%d is over the maximum of %d", n, maxProbesPerHop)
	case n > 0:
		tr.perHop = int(n)
	}
	if o.GetTimeout() != nil {
		tr.timeout = s.validateTimeout(v, field+".timeout", o.GetTimeout())
	}
	return tr
}

// fetchParams is a validated FetchRequest.
type fetchParams struct {
	target      target
	timeout     time.Duration
	request     []byte
	maxBytes    uint64
	readTimeout time.Duration
	framing     netprobev1.Framing
	halfClose   bool
	tls         *tlsParams
	// steps are the dialogue, when the request has one; tls is then for
	// its start_tls.
	steps []step
	// trace, when set, traces the path once the exchange is over.
	trace *traceParams
}

// step is a validated Step.
type step struct {
	send   []byte
	expect *expectProg
	// refusal, on an expect, fails the step when it matches first.
	refusal *expectProg
	// line makes expect an expect_line: matched line by line.
	line     bool
	startTLS bool
	// template is a send_template; a send with no bytes is not a step.
	template *template
}

// Limits of a dialogue (and expect.go's, of its expressions).
const (
	maxSteps = 64
	// maxTemplateLength caps a send_template, and maxGroupBytes each group
	// of a match it can use. A template counts against the payload cap
	// at the most it can expand to: each reference to a group as
	// maxGroupBytes.
	maxTemplateLength = 1024
	maxGroupBytes     = 1024
)

func (s *Server) validateFetch(req *netprobev1.FetchRequest) (*fetchParams, error) {
	var v violations
	p := &fetchParams{
		target:    validateTarget(&v, req.GetTarget()),
		timeout:   s.validateTimeout(&v, "timeout", req.GetTimeout()),
		maxBytes:  req.GetMaxBytes(),
		framing:   req.GetFraming(),
		halfClose: !req.GetKeepWriteOpen(),
	}
	s.validateSource(&v, "target.source_address", &p.target, req.GetTarget().GetSourceAddress())
	p.tls = validateTLS(&v, "tls", req.GetTls(), p.target)
	p.trace = s.validateTrace(&v, "trace", req.GetTrace(), p.target)
	if p.target.network == "icmp" {
		v.add("target.network", "a fetch needs TCP or UDP: an ICMP echo is a Connect")
	}
	udp := p.target.network == "udp"
	switch r := req.GetRequest().(type) {
	case *netprobev1.FetchRequest_Payload:
		if len(r.Payload) > s.cfg.MaxPayloadBytes {
			v.add("payload", "%d bytes is over the server's cap of %d", len(r.Payload), s.cfg.MaxPayloadBytes)
		}
		p.request = r.Payload
	case *netprobev1.FetchRequest_HttpGet:
		if udp {
			v.add("http_get", "an HTTP request needs TCP")
		}
		p.request = httpGetRequest(&v, r.HttpGet)
	}
	switch {
	case p.maxBytes == 0:
		p.maxBytes = s.cfg.MaxFetchBytes
	case p.maxBytes > s.cfg.MaxFetchBytes:
		v.add("max_bytes", "%d is over the server's cap of %d", p.maxBytes, s.cfg.MaxFetchBytes)
	}
	if d := req.GetReadTimeout(); d != nil {
		if err := d.CheckValid(); err != nil {
			v.add("read_timeout", "%v", err)
		} else if p.readTimeout = d.AsDuration(); p.readTimeout <= 0 {
			v.add("read_timeout", "must be positive, got %v", p.readTimeout)
		}
	}
	switch p.framing {
	case netprobev1.Framing_FRAMING_UNSPECIFIED:
		p.framing = netprobev1.Framing_FRAMING_RAW
		if udp {
			p.framing = netprobev1.Framing_FRAMING_DATAGRAMS
		}
	case netprobev1.Framing_FRAMING_RAW:
	case netprobev1.Framing_FRAMING_LINES:
		if udp {
			v.add("framing", "line framing needs TCP")
		}
	case netprobev1.Framing_FRAMING_DATAGRAMS:
		if !udp {
			v.add("framing", "datagram framing needs UDP")
		}
	default:
		v.add("framing", "unknown framing %d", p.framing)
	}
	if udp && req.GetKeepWriteOpen() {
		v.add("keep_write_open", "applies to TCP only: UDP has no half-close")
	}
	if len(req.GetSteps()) > 0 && req.GetRequest() != nil {
		v.add("steps", "a dialogue is the request: give steps, or a payload or http_get, not both")
	}
	p.steps = s.validateSteps(&v, "", req.GetSteps(), udp, req.GetTls() != nil, &expects{})
	return p, v.err()
}

// validateSteps checks a dialogue: its length, each step, and the
// transport (udp is true for any but TCP). field prefixes the violations'
// fields; tls says whether the request has TLS options, which are then
// its start_tls's; exps compiles the expressions, the request's others
// with them.
func (s *Server) validateSteps(v *violations, field string, steps []*netprobev1.Step, udp, tls bool, exps *expects) []step {
	if len(steps) == 0 {
		return nil
	}
	switch {
	case len(steps) > maxSteps:
		v.add(field+"steps", "%d steps is over the cap of %d", len(steps), maxSteps)
		return nil
	case udp:
		v.add(field+"steps", "a dialogue needs TCP")
	}
	out := make([]step, len(steps))
	sent, startTLS := 0, false
	// prev is the last expect before the step: a template's groups are
	// its match's.
	var prev *expectProg
	for i, st := range steps {
		f := fmt.Sprintf("%ssteps[%d]", field, i)
		switch a := st.GetAction().(type) {
		case *netprobev1.Step_Send:
			out[i].send = a.Send
			sent += len(a.Send)
		case *netprobev1.Step_Expect:
			out[i].expect = exps.compile(v, f+".expect", a.Expect)
			prev = out[i].expect
		case *netprobev1.Step_ExpectLine:
			out[i].expect, out[i].line = exps.compile(v, f+".expect_line", a.ExpectLine), true
			prev = out[i].expect
		case *netprobev1.Step_SendTemplate:
			if len(a.SendTemplate) > maxTemplateLength {
				v.add(f+".send_template", "%d bytes is over the cap of %d", len(a.SendTemplate), maxTemplateLength)
				continue
			}
			out[i].template = compileTemplate(a.SendTemplate, prev)
			sent += out[i].template.most
		case *netprobev1.Step_StartTls:
			switch {
			case !a.StartTls:
				v.add(f+".start_tls", "must be true: a step does something")
			case startTLS:
				v.add(f+".start_tls", "TLS is started once")
			}
			out[i].startTLS, startTLS = true, true
		default:
			v.add(f, "a step sends, expects or starts TLS")
		}
		if r := st.GetRefusal(); r != "" {
			out[i].refusal = validateRefusal(v, f, r, out[i].expect, st, exps)
		}
	}
	if sent > s.cfg.MaxPayloadBytes {
		v.add(field+"steps", "the sends add up to %d bytes at the most (a send_template counts as its longest expansion, %d bytes for each group it names), over the server's cap of %d", sent, maxGroupBytes, s.cfg.MaxPayloadBytes)
	}
	if tls && !startTLS {
		v.add(field+"tls", "with steps, tls is for a start_tls step, and there is none")
	}
	return out
}

// validateRefusal compiles the refusal of st, step f, whose expect
// compiled to p (nil when it did not, or st is no expect). A waiting step
// matches with both expressions at once: together they are held to what
// one may cost, so that a probe holds no more while it waits.
func validateRefusal(v *violations, f, source string, p *expectProg, st *netprobev1.Step, exps *expects) *expectProg {
	switch st.GetAction().(type) {
	case *netprobev1.Step_Expect, *netprobev1.Step_ExpectLine:
	default:
		v.add(f+".refusal", "only an expect or expect_line step has a refusal")
		return nil
	}
	r := exps.compile(v, f+".refusal", source)
	if r == nil || p == nil {
		return r
	}
	if cost := p.cost.total() + r.cost.total(); cost > maxExpectCost {
		v.add(f+".refusal", "costs %d bytes compiled with the step's expect (their programs and the state matching them needs), over the cap of %d a step", cost, maxExpectCost)
		return nil
	}
	return r
}

// httpGetRequest renders an HTTP/1.0 GET as a socket client writes it.
func httpGetRequest(v *violations, g *netprobev1.HttpGet) []byte {
	path := g.GetPath()
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		v.add("http_get.path", "%s must start with '/'", quote(path))
	}
	if i := strings.IndexFunc(path, func(r rune) bool { return r <= ' ' || r == 0x7f }); i >= 0 {
		v.add("http_get.path", "%s holds a space or control character at byte %d", quote(path), i)
	}
	if i := strings.IndexFunc(g.GetHost(), func(r rune) bool { return r <= ' ' || r == 0x7f }); i >= 0 {
		v.add("http_get.host", "%s holds a space or control character at byte %d", quote(g.GetHost()), i)
	}
	req := "GET " + path + " HTTP/1.0\r\n"
	if g.GetHost() != "" {
		req += "Host: " + g.GetHost() + "\r\n"
	}
	return []byte(req + "\r\n")
}

func validateResolveService(req *netprobev1.ResolveServiceRequest) (protocol string, err error) {
	var v violations
	switch {
	case req.GetName() == "" && req.GetPort() == 0:
		v.add("name", "a service name or a port is required")
	case req.GetName() != "" && req.GetPort() != 0:
		v.add("port", "give a service name or a port, not both")
	}
	if req.GetName() != "" {
		if msg := checkServiceName(req.GetName()); msg != "" {
			v.add("name", "%s is not a valid service name: %s", quote(req.GetName()), msg)
		}
	}
	if req.GetPort() > 65535 {
		v.add("port", "%d is out of range 1-65535", req.GetPort())
	}
	protocol = strings.ToLower(req.GetProtocol())
	if protocol == "" {
		protocol = "tcp"
	}
	if len(protocol) > 32 || strings.IndexFunc(protocol, func(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-') }) >= 0 {
		v.add("protocol", "%s is not a protocol name such as tcp or udp", quote(req.GetProtocol()))
	}
	return protocol, v.err()
}
