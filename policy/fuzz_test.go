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
