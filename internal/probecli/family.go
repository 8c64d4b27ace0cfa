package probecli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/netprobe/netprobe/client"
)

// familyError is a name that did not resolve under -4 or -6 though it has
// addresses of the other family. The resolver answers "no such host" for
// a name with none of the family asked for, which reads as if the name
// did not exist.
type familyError struct {
	*client.ProbeError
	host string
	ipv6 bool // -6 was given; else -4
}

func (e familyError) Error() string {
	want, have, flag := "IPv4 address (A)", "IPv6 (AAAA)", "-4 asks for IPv4 only"
	if e.ipv6 {
		want, have, flag = "IPv6 address (AAAA)", "IPv4 (A)", "-6 asks for IPv6 only"
	}
	return fmt.Sprintf("resolve %s: %s has no %s, only %s: %s (stage RESOLVE, reason NO_SUCH_HOST)", e.host, e.host, want, have, flag)
}

func (e familyError) Unwrap() error { return e.ProbeError }

// explainFamily returns err, or a familyError when err is a name that did
// not resolve under -4 or -6 and the probe server finds addresses of the
// other family for it. It asks with a UDP connect, which sends nothing:
// connect(2) on a UDP socket only picks a route. A probe of it that gets
// past RESOLVE found some.
func (a *app) explainFamily(ctx context.Context, c *client.Client, tf targetFlags, host string, err error) error {
	var pe *client.ProbeError
	if !tf.ipv4 && !tf.ipv6 || !errors.As(err, &pe) || pe.Stage != client.StageResolve || pe.Reason != client.ReasonNoSuchHost || pe.Connect == nil || pe.Connect.Port == 0 {
		return err
	}
	if _, literal := netip.ParseAddr(host); literal == nil {
		return err
	}
	other := "udp4"
	if tf.ipv4 {
		other = "udp6"
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	_, oerr := c.Connect(ctx, other, net.JoinHostPort(host, strconv.Itoa(int(pe.Connect.Port))), client.ConnectOptions{Timeout: a.Timeout})
	var ope *client.ProbeError
	if oerr != nil && (!errors.As(oerr, &ope) || ope.Stage == client.StageResolve || ope.Stage == client.StageServiceLookup) {
		return err
	}
	return familyError{ProbeError: pe, host: host, ipv6: tf.ipv6}
}
