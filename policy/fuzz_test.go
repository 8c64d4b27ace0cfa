package policy

import (
	"errors"
	"net/netip"
	"testing"
)

// FuzzRule parses rules from untrusted text (flags and policy files) and
// checks that a parsed rule means what it says: it re-parses to itself, and
// as a deny rule it refuses every address and port it covers.
func FuzzRule(f *testing.F) {
	for _, s := range []string{
		"10.0.0.0/8", "any port 25", "192.0.2.1,2001:db8::/32 port 80,8000-8099",
		"::ffff:10.0.0.0/104", "64:ff9b::/96 ports 1-65535", "fe80::/10",
	} {
		f.Add(s, []byte{10, 1, 2, 3}, uint16(25))
	}
	f.Fuzz(func(t *testing.T, text string, addr []byte, port uint16) {
		r, err := ParseRule(text)
		if err != nil {
			return
		}
		again, err := ParseRule(r.Text)
		if err != nil || again.Text != r.Text || len(again.Prefixes) != len(r.Prefixes) || len(again.Ports) != len(r.Ports) {
			t.Fatalf("%q parsed to %q, which re-parses to %+v, %v", text, r.Text, again, err)
		}
		a, ok := netip.AddrFromSlice(addr)
		if !ok || port == 0 {
			return
		}
		p := New()
		p.Deny(r)
		ap := netip.AddrPortFrom(a, port)
		_, covered := r.match(Subjects(a), port)
		err = p.Check("", ap)
		var d *Denied
		if covered && (!errors.As(err, &d) || d.Rule != r.Text) {
			t.Fatalf("deny %q covers %s, but Check = %v", r.Text, ap, err)
		}
		if err != nil && !errors.As(err, &d) {
			t.Fatalf("Check(%s) = %v, not a *Denied", ap, err)
		}
	})
}

// FuzzAllow checks the allow rules' invariant: allowed implies that the
// address dialled is inside an allow rule, the operator's and the
// caller's, whatever form of it (IPv4-mapped, NAT64, 6to4, Teredo) the
// caller wrote.
func FuzzAllow(f *testing.F) {
	for _, s := range []string{"127.0.0.1/32", "10.0.0.0/8 port 80", "2001:db8::/32", "any port 443", "169.254.169.254"} {
		f.Add(s, "10.0.0.0/8", []byte{0x20, 0x02, 0x7f, 0, 0, 1, 0xab, 0xcd, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(80))
		f.Add(s, "any", []byte{0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0, 0, 1}, uint16(443))
		f.Add(s, "127.0.0.0/8", []byte{127, 0, 0, 1}, uint16(80))
	}
	f.Fuzz(func(t *testing.T, allowText, callerText string, addr []byte, port uint16) {
		allow, err := ParseRule(allowText)
		if err != nil {
			return
		}
		callerRule, err := ParseRule(callerText)
		if err != nil {
			return
		}
		a, ok := netip.AddrFromSlice(addr)
		if !ok || port == 0 {
			return
		}
		p := New()
		p.Allow(allow)
		p.AllowCaller("c", callerRule)
		ap := netip.AddrPortFrom(a, port)
		dialled := []netip.Addr{a.Unmap()}
		if p.Check("", ap) == nil {
			if _, ok := allow.match(dialled, port); !ok {
				t.Fatalf("allow %q: %s allowed, but %s is not inside the rule", allow.Text, ap, dialled[0])
			}
		}
		if p.Check("c", ap) == nil {
			if _, ok := callerRule.match(dialled, port); !ok {
				t.Fatalf("caller c allow %q: %s allowed, but %s is not inside the rule", callerRule.Text, ap, dialled[0])
			}
		}
	})
}
