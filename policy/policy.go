// Package policy decides which addresses and ports netprobe may probe: the
// guard that keeps a probe server from being a gateway into the network it
// runs in.
//
// A Policy is checked on every address a probe is about to dial, after the
// name has been resolved, so that a name which resolves (or re-resolves) to
// a denied address is refused before any packet is sent.
//
// IPv6 addresses that carry an IPv4 address (IPv4-mapped, the deprecated
// IPv4-compatible ::a.b.c.d, SIIT's IPv4-translated ::ffff:0:a.b.c.d,
// NAT64 64:ff9b::/96, local-use NAT64 64:ff9b:1::/48, 6to4 2002::/16 and
// Teredo 2001::/32) may reach that IPv4 address through a translator (a
// kernel's sit tunnel sends ::a.b.c.d to a.b.c.d). So a denial matches any
// form of an address, its own or the IPv4 address it carries (every
// reading of it, for local-use NAT64); an allow rule matches
// only the address that is dialled (an IPv4-mapped address is dialled as
// its IPv4 address). The embedded forms can only add denials: "allow
// 127.0.0.1" does not let a caller through 64:ff9b::7f00:1, whose other 96
// bits it would choose.
//
// The order of judgment:
//  1. the operator's deny rules;
//  2. the probe server's own sockets (DenySelf), which nothing overrides;
//  3. the built-in denials (unspecified, link-local, multicast and
//     broadcast addresses), which an allow rule overrides only when it
//     lies inside the denied range, such as "allow 169.254.169.254":
//     allowing "any" does not open the cloud metadata endpoint;
//  4. the operator's allow rules: when there are any, the dialled address
//     must be inside one of them;
//  5. the caller's own allow rules, when the caller has any.
//
// Invariant (FuzzAllow): when there are allow rules, an allowed address is
// inside one of them, as dialled.
package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
)

// Rule is a set of prefixes, optionally narrowed to some ports.
type Rule struct {
	// Text is the rule as written, which names it in refusals.
	Text string
	// Prefixes are the addresses the rule covers.
	Prefixes []netip.Prefix
	// Ports are the ports it covers; none means every port.
	Ports []PortRange
}

// PortRange is the ports from Lo to Hi, both included.
type PortRange struct{ Lo, Hi uint16 }

func (r *Rule) coversPort(port uint16) bool {
	if len(r.Ports) == 0 {
		return true
	}
	return slices.ContainsFunc(r.Ports, func(pr PortRange) bool { return pr.Lo <= port && port <= pr.Hi })
}

// match returns the rule's prefix that holds one of the subjects, when the
// port is covered too.
func (r *Rule) match(subjects []netip.Addr, port uint16) (netip.Prefix, bool) {
	if !r.coversPort(port) {
		return netip.Prefix{}, false
	}
	for _, p := range r.Prefixes {
		for _, a := range subjects {
			if p.Contains(a) {
				return p, true
			}
		}
	}
	return netip.Prefix{}, false
}

// Policy is the set of rules. Build it with New and the Add methods before
// use; after that it is safe for concurrent use.
type Policy struct {
	deny, self, builtin, allow []Rule
	callers                    map[string][]Rule
	// identities are the client identities each caller may present ("" for
	// any caller).
	identities map[string][]string
}

// The built-in denials.
var defaultDenials = []Rule{
	{Text: "built-in: unspecified address", Prefixes: prefixes("0.0.0.0/8", "::/128")},
	{Text: "built-in: link-local (cloud metadata)", Prefixes: prefixes("169.254.0.0/16", "fe80::/10")},
	{Text: "built-in: multicast", Prefixes: prefixes("224.0.0.0/4", "ff00::/8")},
	{Text: "built-in: broadcast", Prefixes: prefixes("255.255.255.255/32")},
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// New returns the default policy: every address allowed but the built-in
// denials.
func New() *Policy {
	return &Policy{builtin: slices.Clone(defaultDenials), callers: map[string][]Rule{}, identities: map[string][]string{}}
}

// DenySelf denies port on the addresses of prefix, where the probe server
// itself answers, in any form and whatever the allow rules say: a probe of
// the server's own gRPC or metrics port would reach past its
// authentication as a call from itself.
func (p *Policy) DenySelf(prefix netip.Prefix, port uint16) {
	where := prefix.String()
	if prefix.IsSingleIP() {
		where = netip.AddrPortFrom(prefix.Addr(), port).String()
	} else {
		where += " port " + strconv.Itoa(int(port))
	}
	p.self = append(p.self, Rule{
		Text:     "built-in: the probe server itself (" + where + ")",
		Prefixes: []netip.Prefix{prefix.Masked()},
		Ports:    []PortRange{{port, port}},
	})
}

// Deny adds a deny rule.
func (p *Policy) Deny(r Rule) { p.deny = append(p.deny, r) }

// Allow adds an allow rule: once there is one, only what the allow rules
// cover is allowed.
func (p *Policy) Allow(r Rule) { p.allow = append(p.allow, r) }

// AllowCaller adds an allow rule for one caller, who may then reach only
// what its own rules cover (and the policy allows).
func (p *Policy) AllowCaller(caller string, r Rule) {
	p.callers[caller] = append(p.callers[caller], r)
}

// GrantIdentity lets caller ("" for any caller) present the client
// identity named id in its probes' TLS handshakes.
func (p *Policy) GrantIdentity(caller, id string) {
	p.identities[caller] = append(p.identities[caller], id)
}

// MayUse reports whether caller may present the client identity id.
func (p *Policy) MayUse(caller, id string) bool {
	return slices.Contains(p.identities[""], id) || slices.Contains(p.identities[caller], id)
}

// Denied is a refusal: the address and the rule that refused it.
type Denied struct {
	Addr netip.AddrPort
	// Rule names the rule: its text, or why no allow rule applied.
	Rule string
}

func (d *Denied) Error() string {
	if d.Addr.Port() == 0 {
		// An ICMP echo's: it has no port.
		return fmt.Sprintf("%s is denied by the target policy: %s", d.Addr.Addr(), d.Rule)
	}
	return fmt.Sprintf("%s is denied by the target policy: %s", d.Addr, d.Rule)
}

// Check returns nil when caller may probe ap, or a *Denied saying which
// rule refused it. caller is "" for an anonymous caller.
func (p *Policy) Check(caller string, ap netip.AddrPort) error {
	subjects := Subjects(ap.Addr())
	dialled := subjects[:1]
	if ap.Addr().Is4In6() {
		// Dialled as the IPv4 address it maps.
		dialled = subjects[1:]
	}
	port := ap.Port()
	deny := func(rule string) error { return &Denied{Addr: ap, Rule: rule} }
	for i := range p.deny {
		if _, ok := p.deny[i].match(subjects, port); ok {
			return deny(p.deny[i].Text)
		}
	}
	for i := range p.self {
		if _, ok := p.self[i].match(subjects, port); ok {
			return deny(p.self[i].Text)
		}
	}
	for i := range p.builtin {
		denied, ok := p.builtin[i].match(subjects, port)
		if ok && !p.overrides(denied, dialled, port) {
			return deny(p.builtin[i].Text)
		}
	}
	if len(p.allow) > 0 && !anyMatch(p.allow, dialled, port) {
		return deny(notAllowed)
	}
	if rules, ok := p.callers[caller]; ok && !anyMatch(rules, dialled, port) {
		return deny(notCallerAllowed(caller))
	}
	return nil
}

// notAllowed names the refusal of an address no allow rule covers.
const notAllowed = "not covered by any allow rule"

// notCallerAllowed names the refusal of an address none of caller's
// allow rules covers.
func notCallerAllowed(caller string) string {
	return "not covered by caller " + caller + "'s allow rules"
}

// overrides reports whether an allow rule lifts a built-in denial of
// denied: it must cover the dialled address and lie inside the denied
// range.
func (p *Policy) overrides(denied netip.Prefix, dialled []netip.Addr, port uint16) bool {
	for i := range p.allow {
		if allowed, ok := p.allow[i].match(dialled, port); ok && allowed.Bits() >= denied.Bits() && denied.Contains(allowed.Addr()) {
			return true
		}
	}
	return false
}

func anyMatch(rules []Rule, subjects []netip.Addr, port uint16) bool {
	return slices.ContainsFunc(rules, func(r Rule) bool {
		_, ok := r.match(subjects, port)
		return ok
	})
}

// Well-known IPv6 prefixes that carry an IPv4 address.
var (
	// compatible is RFC 4291's deprecated IPv4-compatible addresses,
	// ::a.b.c.d, of which :: and ::1 are not.
	compatible = netip.MustParsePrefix("::/96")
	// translated is RFC 7915's (SIIT) IPv4-translated addresses,
	// ::ffff:0:a.b.c.d.
	translated = netip.MustParsePrefix("::ffff:0:0:0/96")
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	// localNAT64 is RFC 8215's local-use prefix, which a network's
	// translator uses at a length of its operator's choosing: see
	// localNAT64Readings.
	localNAT64 = netip.MustParsePrefix("64:ff9b:1::/48")
	sixTo4     = netip.MustParsePrefix("2002::/16")
	teredo     = netip.MustParsePrefix("2001::/32")
)

// localNAT64Readings are the byte positions of the IPv4 address under
// each RFC 6052 prefix length a translator may use inside 64:ff9b:1::/48
// (/48, /56, /64 and /96; the shorter ones do not fit in it). Below /96
// the address skips byte 8, the "u" octet (bits 64-71). probed cannot
// know which length its network's translator uses, so an address there
// is judged by all four readings: a denial of any one denies it. The
// price is that most addresses a local-use translator serves read as
// 0.0.0.0/8 under another length and are denied as unspecified.
var localNAT64Readings = [...][4]int{
	{6, 7, 9, 10},    // /48
	{7, 9, 10, 11},   // /56
	{9, 10, 11, 12},  // /64
	{12, 13, 14, 15}, // /96
}

// Subjects returns the addresses a policy judges for a: a itself, and the
// IPv4 addresses it carries, if any (IPv4-mapped, IPv4-compatible,
// IPv4-translated, NAT64, each reading of local-use NAT64, 6to4, or the
// client address of Teredo).
func Subjects(a netip.Addr) []netip.Addr {
	a = a.WithZone("")
	if !a.Is6() {
		return []netip.Addr{a}
	}
	b := a.As16()
	var v4 [4]byte
	switch {
	case a.Is4In6():
		return []netip.Addr{a, a.Unmap()}
	case compatible.Contains(a) && !a.IsUnspecified() && !a.IsLoopback(),
		translated.Contains(a),
		nat64.Contains(a):
		copy(v4[:], b[12:16])
	case localNAT64.Contains(a):
		out := []netip.Addr{a}
		for _, at := range localNAT64Readings {
			v4 := netip.AddrFrom4([4]byte{b[at[0]], b[at[1]], b[at[2]], b[at[3]]})
			if !slices.Contains(out, v4) {
				out = append(out, v4)
			}
		}
		return out
	case sixTo4.Contains(a):
		copy(v4[:], b[2:6])
	case teredo.Contains(a):
		for i := range v4 {
			v4[i] = ^b[12+i]
		}
	default:
		return []netip.Addr{a}
	}
	return []netip.Addr{a, netip.AddrFrom4(v4)}
}

// Refusals lists every rule a Denied can name: the deny rules' texts,
// the built-in ones', and what refuses an address no allow rule covers.
func (p *Policy) Refusals() []string {
	var out []string
	for _, rules := range [][]Rule{p.deny, p.self, p.builtin} {
		for _, r := range rules {
			out = append(out, r.Text)
		}
	}
	if len(p.allow) > 0 {
		out = append(out, notAllowed)
	}
	for _, c := range slices.Sorted(maps.Keys(p.callers)) {
		out = append(out, notCallerAllowed(c))
	}
	return out
}

// Rules lists the rules, in the order they are judged.
func (p *Policy) Rules() []string {
	var out []string
	for _, r := range p.deny {
		out = append(out, "deny "+r.Text)
	}
	for _, r := range p.self {
		out = append(out, "deny ("+r.Text+")")
	}
	for _, r := range p.builtin {
		out = append(out, "deny ("+r.Text+")")
	}
	for _, r := range p.allow {
		out = append(out, "allow "+r.Text)
	}
	for _, c := range slices.Sorted(maps.Keys(p.callers)) {
		for _, r := range p.callers[c] {
			out = append(out, "caller "+c+" allow "+r.Text)
		}
	}
	for _, c := range slices.Sorted(maps.Keys(p.identities)) {
		for _, id := range p.identities[c] {
			if c == "" {
				out = append(out, "identity "+id)
			} else {
				out = append(out, "caller "+c+" identity "+id)
			}
		}
	}
	return out
}
