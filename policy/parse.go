package policy

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// ParseRule parses a rule: addresses, then optionally the ports it covers.
//
//	ADDRESSES [port PORTS]
//
// ADDRESSES is a comma-separated list of CIDR prefixes ("10.0.0.0/8",
// "2001:db8::/32"), single addresses ("192.0.2.1") or "any" (every IPv4
// and IPv6 address); PORTS a comma-separated list of ports and ranges
// ("22,80,8000-8999").
func ParseRule(text string) (Rule, error) {
	fields := strings.Fields(text)
	r := Rule{Text: strings.Join(fields, " ")}
	if len(fields) == 0 {
		return r, fmt.Errorf("rule %q: no addresses", text)
	}
	for _, s := range strings.Split(fields[0], ",") {
		switch {
		case s == "any":
			r.Prefixes = append(r.Prefixes, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
		case strings.Contains(s, "/"):
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return r, fmt.Errorf("rule %q: %w", text, err)
			}
			if p != p.Masked() {
				return r, fmt.Errorf("rule %q: %s has host bits set; did you mean %s?", text, p, p.Masked())
			}
			r.Prefixes = append(r.Prefixes, p)
		default:
			a, err := netip.ParseAddr(s)
			if err != nil {
				return r, fmt.Errorf("rule %q: %q is not an address, a prefix or \"any\"", text, s)
			}
			if a.Zone() != "" {
				return r, fmt.Errorf("rule %q: %s has a zone; rules are for addresses only", text, a)
			}
			r.Prefixes = append(r.Prefixes, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	switch {
	case len(fields) == 1:
		return r, nil
	case len(fields) != 3 || (fields[1] != "port" && fields[1] != "ports"):
		return r, fmt.Errorf("rule %q: want ADDRESSES [port PORTS]", text)
	}
	for _, s := range strings.Split(fields[2], ",") {
		lo, hi, isRange := strings.Cut(s, "-")
		pr, err := parsePort(lo)
		if err != nil {
			return r, fmt.Errorf("rule %q: %w", text, err)
		}
		rng := PortRange{pr, pr}
		if isRange {
			if rng.Hi, err = parsePort(hi); err != nil {
				return r, fmt.Errorf("rule %q: %w", text, err)
			}
			if rng.Hi < rng.Lo {
				return r, fmt.Errorf("rule %q: port range %s runs backwards", text, s)
			}
		}
		r.Ports = append(r.Ports, rng)
	}
	return r, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(n), nil
}

// AddLine adds one line of a policy file:
//
//	allow RULE
//	deny RULE
//	caller NAME allow RULE
//	identity ID              (any caller may present client identity ID)
//	caller NAME identity ID  (caller NAME may)
//
// Blank lines and lines starting with # are ignored.
func (p *Policy) AddLine(line string) error {
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return nil
	}
	verb, rest, _ := strings.Cut(line, " ")
	switch verb {
	case "allow", "deny":
		r, err := ParseRule(rest)
		if err != nil {
			return err
		}
		if verb == "allow" {
			p.Allow(r)
		} else {
			p.Deny(r)
		}
		return nil
	case "identity":
		id := strings.TrimSpace(rest)
		if id == "" || strings.ContainsAny(id, " \t") {
			return fmt.Errorf("%q: want identity NAME", line)
		}
		p.GrantIdentity("", id)
		return nil
	case "caller":
		name, rest, _ := strings.Cut(strings.TrimSpace(rest), " ")
		verb, arg, _ := strings.Cut(strings.TrimSpace(rest), " ")
		arg = strings.TrimSpace(arg)
		switch {
		case name != "" && verb == "identity" && arg != "" && !strings.ContainsAny(arg, " \t"):
			p.GrantIdentity(name, arg)
			return nil
		case name == "" || verb != "allow":
			return fmt.Errorf("%q: want caller NAME allow RULE, or caller NAME identity ID", line)
		}
		r, err := ParseRule(arg)
		if err != nil {
			return err
		}
		p.AllowCaller(name, r)
		return nil
	}
	return fmt.Errorf("%q: a line is allow RULE, deny RULE, caller NAME allow RULE, identity ID or caller NAME identity ID", line)
}

// Load adds the lines read from r; errors name the line.
func (p *Policy) Load(r io.Reader) error {
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		if err := p.AddLine(sc.Text()); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
	return sc.Err()
}
