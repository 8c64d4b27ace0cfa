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
	// IPv4 rules against the forms that carry IPv4: SIIT's, local-use NAT64.
	f.Add("169.254.0.0/16", []byte{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 169, 254, 169, 254}, uint16(80))
	f.Add("169.254.0.0/16", []byte{0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0, 169, 254, 169, 254}, uint16(80))
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
// caller's, whatever form of it (IPv4-mapped, IPv4-translated, NAT64,
// local-use NAT64, 6to4, Teredo) the caller wrote.
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

// embed writes v4 into an IPv6 address of the given form, the other bits
// taken from fill: the encoders of the RFCs, written apart from Subjects'
// decoders so that each checks the other.
func embed(form uint8, v4 [4]byte, fill [16]byte) (netip.Addr, bool) {
	b := fill
	switch form % 10 {
	case 0: // IPv4-mapped, RFC 4291
		b = [16]byte{10: 0xff, 11: 0xff}
		copy(b[12:], v4[:])
	case 1: // IPv4-compatible, RFC 4291; :: and ::1 are not
		if v4[0]|v4[1]|v4[2] == 0 && v4[3] <= 1 {
			return netip.Addr{}, false
		}
		b = [16]byte{}
		copy(b[12:], v4[:])
	case 2: // IPv4-translated, RFC 7915 (SIIT)
		b = [16]byte{8: 0xff, 9: 0xff}
		copy(b[12:], v4[:])
	case 3: // NAT64 well-known prefix, RFC 6052
		b = [16]byte{1: 0x64, 2: 0xff, 3: 0x9b}
		copy(b[12:], v4[:])
	case 4, 5, 6, 7: // local-use NAT64, RFC 8215, at /48, /56, /64, /96
		copy(b[:6], []byte{0, 0x64, 0xff, 0x9b, 0, 1})
		bits := 48 + 8*int(form%10-4)
		if form%10 == 7 {
			bits = 96
		}
		// RFC 6052 2.2: the IPv4 address follows the prefix, skipping
		// bits 64-71 (the u octet, left as fill: a translator need not
		// check that it is zero, so neither does the policy).
		at := bits / 8
		for i := range v4 {
			if at == 8 {
				at++
			}
			b[at] = v4[i]
			at++
		}
	case 8: // 6to4, RFC 3056
		b[0], b[1] = 0x20, 0x02
		copy(b[2:6], v4[:])
	case 9: // Teredo, RFC 4380: the client address inverted
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0, 0
		for i := range v4 {
			b[12+i] = ^v4[i]
		}
	}
	return netip.AddrFrom16(b), true
}

// FuzzEmbedded checks that a denial covers every form of an address: an
// IPv6 address carrying a denied IPv4 address, in any form (the local-use
// NAT64 prefix at any length), is denied whatever its other bits and
// whatever the allow rules say.
func FuzzEmbedded(f *testing.F) {
	for form := range uint8(10) {
		f.Add(form, []byte{169, 254, 169, 254}, []byte{0xab, 0xcd, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
		f.Add(form, []byte{10, 0, 0, 1}, make([]byte, 16))
	}
	f.Fuzz(func(t *testing.T, form uint8, v4b, fillb []byte) {
		if len(v4b) != 4 || len(fillb) != 16 {
			return
		}
		v4 := [4]byte(v4b)
		a, ok := embed(form, v4, [16]byte(fillb))
		if !ok {
			return
		}
		p := New()
		p.Deny(Rule{Text: "the carried address", Prefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4(v4), 32)}})
		p.Allow(Rule{Text: "any", Prefixes: prefixes("0.0.0.0/0", "::/0")})
		ap := netip.AddrPortFrom(a, 80)
		var d *Denied
		if err := p.Check("", ap); !errors.As(err, &d) || d.Rule != "the carried address" {
			t.Fatalf("%s carries %s (form %d), which is denied, but Check = %v", a, netip.AddrFrom4(v4), form%10, err)
		}
	})
}
