package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDefaults walks the edges of every built-in range, and every form of
// IPv6 that carries an IPv4 address, through the default policy.
func TestDefaults(t *testing.T) {
	p := New()
	p.DenySelf(netip.MustParsePrefix("127.0.0.1/32"), 7070)
	tests := []struct {
		addr string
		port uint16
		rule string // "" when allowed
	}{
		{"0.0.0.0", 80, "built-in: unspecified address"},
		{"0.255.255.255", 80, "built-in: unspecified address"},
		{"1.0.0.0", 80, ""},
		{"::", 80, "built-in: unspecified address"},
		{"::1", 80, ""},
		{"169.253.255.255", 80, ""},
		{"169.254.0.0", 80, "built-in: link-local (cloud metadata)"},
		{"169.254.169.254", 80, "built-in: link-local (cloud metadata)"},
		{"169.254.255.255", 80, "built-in: link-local (cloud metadata)"},
		{"169.255.0.0", 80, ""},
		{"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 80, ""},
		{"fe80::", 80, "built-in: link-local (cloud metadata)"},
		{"fe80::1%eth0", 80, "built-in: link-local (cloud metadata)"},
		{"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 80, "built-in: link-local (cloud metadata)"},
		{"fec0::", 80, ""},
		{"fd00:ec2::254", 80, ""},
		{"223.255.255.255", 80, ""},
		{"224.0.0.0", 80, "built-in: multicast"},
		{"239.255.255.255", 80, "built-in: multicast"},
		{"240.0.0.0", 80, ""},
		{"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 80, ""},
		{"ff00::", 80, "built-in: multicast"},
		{"ff02::1", 80, "built-in: multicast"},
		{"255.255.255.254", 80, ""},
		{"255.255.255.255", 80, "built-in: broadcast"},
		{"127.0.0.1", 7070, "built-in: the probe server itself (127.0.0.1:7070)"},
		{"127.0.0.1", 7071, ""},
		{"127.0.0.2", 7070, ""},
		{"10.0.0.1", 22, ""},
		{"198.18.0.1", 80, ""},
		{"2001:db8::1", 80, ""},
		// IPv6 forms carrying a denied IPv4 address.
		{"::ffff:169.254.169.254", 80, "built-in: link-local (cloud metadata)"},
		{"::ffff:127.0.0.1", 7070, "built-in: the probe server itself (127.0.0.1:7070)"},
		{"::ffff:10.0.0.1", 80, ""},
		{"::169.254.169.254", 80, "built-in: link-local (cloud metadata)"}, // IPv4-compatible
		{"::127.0.0.1", 7070, "built-in: the probe server itself (127.0.0.1:7070)"},
		{"::224.0.0.1", 80, "built-in: multicast"},
		{"::0.0.0.2", 80, "built-in: unspecified address"},
		{"::10.0.0.1", 80, ""},
		{"::127.0.0.1", 7071, ""},
		{"::1", 7070, ""},   // loopback, not 0.0.0.1
		{"::1:0:0", 80, ""}, // outside ::/96
		{"64:ff9b::a9fe:a9fe", 80, "built-in: link-local (cloud metadata)"},
		{"64:ff9b::7f00:1", 7070, "built-in: the probe server itself (127.0.0.1:7070)"},
		{"64:ff9b::a00:1", 80, ""},
		{"64:ff9b:0:ffff:ffff:ffff:a9fe:a9fe", 80, ""}, // outside 64:ff9b::/96
		// Local-use NAT64, read at every RFC 6052 length that fits in
		// 64:ff9b:1::/48 (the IPv4 address at bytes 6,7,9,10 for /48;
		// 7,9,10,11 for /56; 9-12 for /64; 12-15 for /96).
		{"64:ff9b:1::a9fe:a9fe", 80, "built-in: unspecified address"},                       // /48 and /56 read 0.0.0.0, /96 169.254.169.254
		{"64:ff9b:1:abcd:ef01:2345:a9fe:a9fe", 80, "built-in: link-local (cloud metadata)"}, // only /96 denied
		{"64:ff9b:1:1234:a9:fea9:fe00:1", 80, "built-in: link-local (cloud metadata)"},      // only /64 denied
		{"64:ff9b:1:12a9:fe:a9fe:a00:1", 80, "built-in: link-local (cloud metadata)"},       // only /56 denied
		{"64:ff9b:1:a9fe:a9:fe01:a00:1", 80, "built-in: link-local (cloud metadata)"},       // /48 (and /64) denied
		{"64:ff9b:1:abcd:ef01:2345:7f00:1", 7070, "built-in: the probe server itself (127.0.0.1:7070)"},
		{"64:ff9b:1:abcd:ef01:2345:a00:1", 80, ""},                // 171.205.1.35, 205.1.35.69, 1.35.69.10, 10.0.0.1
		{"64:ff9b:1::a00:1", 80, "built-in: unspecified address"}, // the price: 0.0.0.0 under /48
		{"64:ff9b:2::a9fe:a9fe", 80, ""},                          // outside 64:ff9b:1::/48
		// SIIT's IPv4-translated form, ::ffff:0:0:0/96.
		{"::ffff:0:a9fe:a9fe", 80, "built-in: link-local (cloud metadata)"},
		{"::ffff:0:7f00:1", 7070, "built-in: the probe server itself (127.0.0.1:7070)"},
		{"::ffff:0:e000:1", 80, "built-in: multicast"},
		{"::ffff:0:a00:1", 80, ""},
		{"::ffff:1:a9fe:a9fe", 80, ""},   // outside ::ffff:0:0:0/96
		{"::fffe:0:a9fe:a9fe", 80, ""},   // outside ::ffff:0:0:0/96
		{"::1:ffff:0:a9fe:a9fe", 80, ""}, // outside ::ffff:0:0:0/96
		{"2002:a9fe:a9fe::1", 80, "built-in: link-local (cloud metadata)"},
		{"2002:e000:1::", 80, "built-in: multicast"},
		{"2002:a00:1::1", 80, ""},
		{"2001:0:4136:e378:8000:63bf:5601:5601", 80, "built-in: link-local (cloud metadata)"}, // client 169.254.169.254, inverted
		{"2001:0:4136:e378:8000:63bf:f5ff:fffe", 80, ""},                                      // client 10.0.0.1
		{"2001:1::1", 80, ""},                                                                 // not Teredo
	}
	for _, tt := range tests {
		ap := netip.AddrPortFrom(netip.MustParseAddr(tt.addr), tt.port)
		err := p.Check("", ap)
		var d *Denied
		switch {
		case tt.rule == "" && err != nil:
			t.Errorf("%s: %v, want allowed", ap, err)
		case tt.rule != "" && (!errors.As(err, &d) || d.Rule != tt.rule):
			t.Errorf("%s: %v, want denied by %q", ap, err, tt.rule)
		}
	}
}

func TestSubjects(t *testing.T) {
	tests := []struct {
		addr string
		v4   []string
	}{
		{"192.0.2.1", nil},
		{"2001:db8::1", nil},
		{"::ffff:192.0.2.1", []string{"192.0.2.1"}},
		{"64:ff9b::c000:201", []string{"192.0.2.1"}},
		{"2002:c000:201::", []string{"192.0.2.1"}},
		{"2001:0:4136:e378:8000:63bf:3fff:fdfe", []string{"192.0.2.1"}},
		// IPv4-compatible: deprecated, but a kernel's sit tunnel still
		// routes it to the IPv4 address; :: and ::1 are not.
		{"::192.0.2.1", []string{"192.0.2.1"}},
		{"::", nil},
		{"::1", nil},
		// SIIT's IPv4-translated form.
		{"::ffff:0:c000:201", []string{"192.0.2.1"}},
		// Local-use NAT64: the /48, /56, /64 and /96 readings, each once.
		{"64:ff9b:1:c000:2:100::", []string{"192.0.2.1", "0.2.1.0", "2.1.0.0", "0.0.0.0"}},
		{"64:ff9b:1::c000:201", []string{"0.0.0.0", "0.0.0.192", "192.0.2.1"}},
		{"64:ff9b:1:102:304:506:708:90a", []string{"1.2.4.5", "2.4.5.6", "4.5.6.7", "7.8.9.10"}},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		want := []netip.Addr{a}
		for _, v4 := range tt.v4 {
			want = append(want, netip.MustParseAddr(v4))
		}
		if got := Subjects(a); !cmp.Equal(got, want, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })) {
			t.Errorf("Subjects(%s) = %v, want %v", a, got, want)
		}
	}
}

// TestRules checks the operator's rules: deny first, overrides of built-in
// denials only from inside, allow lists, ports, and callers.
func TestRules(t *testing.T) {
	p := New()
	for _, line := range []string{
		"# a comment",
		"",
		"deny 10.9.0.0/16",
		"deny any port 25",
		"allow 10.0.0.0/8,2001:db8::/32",
		"allow 198.18.0.0/15 port 80,8000-8099",
		"allow 169.254.169.254",
		"allow any port 443",
		"caller team-a allow 10.1.0.0/16",
		"caller team-a allow any port 443",
	} {
		if err := p.AddLine(line); err != nil {
			t.Fatalf("AddLine(%q): %v", line, err)
		}
	}
	tests := []struct {
		caller string
		addr   string
		rule   string
	}{
		{"", "10.1.2.3:22", ""},
		{"", "10.9.0.1:22", "10.9.0.0/16"},
		{"", "10.1.2.3:25", "any port 25"},
		{"", "[2001:db8::5]:22", ""},
		{"", "[::ffff:10.1.2.3]:22", ""},
		{"", "192.168.1.1:22", "not covered by any allow rule"},
		{"", "198.18.0.1:80", ""},
		{"", "198.18.0.1:8099", ""},
		{"", "198.18.0.1:8100", "not covered by any allow rule"},
		{"", "169.254.169.254:80", ""},
		{"", "169.254.169.253:80", "built-in: link-local (cloud metadata)"},
		{"", "169.254.169.253:443", "built-in: link-local (cloud metadata)"}, // "any" does not lift it
		{"", "203.0.113.9:443", ""},
		{"team-a", "10.1.2.3:22", ""},
		{"team-a", "10.2.0.1:22", "not covered by caller team-a's allow rules"},
		{"team-a", "203.0.113.9:443", ""},
		{"team-b", "10.2.0.1:22", ""},
	}
	for _, tt := range tests {
		ap := netip.MustParseAddrPort(tt.addr)
		err := p.Check(tt.caller, ap)
		var d *Denied
		switch {
		case tt.rule == "" && err != nil:
			t.Errorf("%s for %q: %v, want allowed", ap, tt.caller, err)
		case tt.rule != "" && (!errors.As(err, &d) || d.Rule != tt.rule):
			t.Errorf("%s for %q: %v, want denied by %q", ap, tt.caller, err, tt.rule)
		}
	}
}

// TestEmbeddedForms judges every IPv6 form that carries an IPv4 address
// against allow and deny rules for that IPv4 address: a denial covers
// every form, an allow rule only the address dialled. (An IPv4-mapped
// address is dialled as its IPv4 address.)
func TestEmbeddedForms(t *testing.T) {
	forms := []struct {
		name, addr string
		dialledV4  bool
	}{
		{"IPv4", "127.0.0.1", true},
		{"IPv4-mapped", "::ffff:127.0.0.1", true},
		{"NAT64", "64:ff9b::7f00:1", false},
		{"local-use NAT64 /96", "64:ff9b:1:abcd:ef01:2345:7f00:1", false},
		{"local-use NAT64 /48", "64:ff9b:1:7f00:1:100::", false},
		{"IPv4-translated", "::ffff:0:7f00:1", false},
		{"6to4", "2002:7f00:1:abcd::1", false},
		{"Teredo", "2001:0:dead:beef::80ff:fffe", false},
	}
	allow, deny, caller, self := New(), New(), New(), New()
	for p, line := range map[*Policy]string{allow: "allow 127.0.0.1/32", deny: "deny 127.0.0.1", caller: "caller team-a allow 127.0.0.1"} {
		if err := p.AddLine(line); err != nil {
			t.Fatal(err)
		}
	}
	self.DenySelf(netip.MustParsePrefix("127.0.0.0/8"), 7070)
	if err := self.AddLine("allow any"); err != nil {
		t.Fatal(err)
	}
	metadata := New()
	if err := metadata.AddLine("allow 169.254.169.254"); err != nil {
		t.Fatal(err)
	}
	for _, f := range forms {
		ap := netip.AddrPortFrom(netip.MustParseAddr(f.addr), 7070)
		t.Run(f.name, func(t *testing.T) {
			if err := allow.Check("", ap); (err == nil) != f.dialledV4 {
				t.Errorf("allow 127.0.0.1/32: %v; want allowed only when 127.0.0.1 is what is dialled", err)
			}
			if err := caller.Check("team-a", ap); (err == nil) != f.dialledV4 {
				t.Errorf("caller team-a allow 127.0.0.1: %v; want allowed only when 127.0.0.1 is what is dialled", err)
			}
			if err := deny.Check("", ap); err == nil {
				t.Error("deny 127.0.0.1: allowed, want denied in every form")
			}
			if err := self.Check("", ap); err == nil {
				t.Error("the server's own port, under allow any: allowed, want denied in every form")
			}
		})
	}
	// An allow rule lifts a built-in denial only for the address dialled.
	for addr, allowed := range map[string]bool{"169.254.169.254": true, "::ffff:169.254.169.254": true, "64:ff9b::a9fe:a9fe": false, "2002:a9fe:a9fe::1": false, "64:ff9b:1:abcd:ef01:2345:a9fe:a9fe": false, "::ffff:0:a9fe:a9fe": false} {
		ap := netip.AddrPortFrom(netip.MustParseAddr(addr), 80)
		if err := metadata.Check("", ap); (err == nil) != allowed {
			t.Errorf("allow 169.254.169.254, %s: %v; want allowed %v", ap, err, allowed)
		}
	}
}

// TestDenySelf checks the server's own sockets: a wildcard listener's
// whole loopback range on its port, in any form, whatever allows it.
func TestDenySelf(t *testing.T) {
	p := New()
	p.DenySelf(netip.MustParsePrefix("127.0.0.0/8"), 7080)
	p.DenySelf(netip.MustParsePrefix("::1/128"), 7080)
	p.DenySelf(netip.MustParsePrefix("192.0.2.7/32"), 7081)
	if err := p.AddLine("allow 127.0.0.0/8,::1,192.0.2.7"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr string
		rule string
	}{
		{"127.0.0.5:7080", "built-in: the probe server itself (127.0.0.0/8 port 7080)"},
		{"[::ffff:127.0.0.9]:7080", "built-in: the probe server itself (127.0.0.0/8 port 7080)"},
		{"[64:ff9b::7f00:5]:7080", "built-in: the probe server itself (127.0.0.0/8 port 7080)"},
		{"[::1]:7080", "built-in: the probe server itself ([::1]:7080)"},
		{"192.0.2.7:7081", "built-in: the probe server itself (192.0.2.7:7081)"},
		{"127.0.0.5:7079", ""},
		{"192.0.2.7:7080", ""},
	} {
		ap := netip.MustParseAddrPort(tt.addr)
		err := p.Check("", ap)
		var d *Denied
		switch {
		case tt.rule == "" && err != nil:
			t.Errorf("%s: %v, want allowed", ap, err)
		case tt.rule != "" && (!errors.As(err, &d) || d.Rule != tt.rule):
			t.Errorf("%s: %v, want denied by %q", ap, err, tt.rule)
		}
	}
}

// TestIdentities checks who may present which client identity.
func TestIdentities(t *testing.T) {
	p := New()
	for _, line := range []string{"identity shared", "caller team-a identity billing"} {
		if err := p.AddLine(line); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		caller, id string
		want       bool
	}{
		{"", "shared", true},
		{"team-b", "shared", true},
		{"team-a", "billing", true},
		{"team-b", "billing", false},
		{"", "billing", false},
		{"team-a", "other", false},
	} {
		if got := p.MayUse(tc.caller, tc.id); got != tc.want {
			t.Errorf("MayUse(%q, %q) = %v, want %v", tc.caller, tc.id, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct{ line, want string }{
		{"allow", `rule "": no addresses`},
		{"allow 10.0.0.1/8", "has host bits set; did you mean 10.0.0.0/8?"},
		{"allow 10.0.0.0/33", "prefix length out of range"},
		{"allow example.com", `"example.com" is not an address, a prefix or "any"`},
		{"allow fe80::1%eth0", "has a zone"},
		{"allow 10.0.0.0/8 22", "want ADDRESSES [port PORTS]"},
		{"allow 10.0.0.0/8 port 0", `"0" is not a port`},
		{"allow 10.0.0.0/8 port 70000", `"70000" is not a port`},
		{"allow 10.0.0.0/8 port 90-80", "runs backwards"},
		{"permit 10.0.0.0/8", "a line is allow RULE, deny RULE, caller NAME allow RULE, identity ID or caller NAME identity ID"},
		{"identity", "want identity NAME"},
		{"identity a b", "want identity NAME"},
		{"caller team-a identity", "want caller NAME allow RULE, or caller NAME identity ID"},
		{"caller team-a deny 10.0.0.0/8", "want caller NAME allow RULE, or caller NAME identity ID"},
	} {
		err := New().AddLine(tt.line)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("AddLine(%q) = %v, want an error containing %q", tt.line, err, tt.want)
		}
	}
	err := New().Load(strings.NewReader("allow 10.0.0.0/8\nallow nonsense\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "line 2: ") {
		t.Errorf("Load = %v, want an error naming line 2", err)
	}
}
