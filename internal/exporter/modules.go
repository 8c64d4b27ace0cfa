package exporter

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/modules"
	"github.com/netprobe/netprobe/service"
)

// moduleCheck loads module files and checks them against a server's
// configuration: the source addresses it may bind, and every module's
// request as its probe service validates it, so that a module no scrape
// could run is refused as the file loads, not answered 400 on every
// scrape.
type moduleCheck struct {
	sources []netip.Prefix
	// service validates requests; it probes nothing.
	service            *service.Server
	offset, maxTimeout time.Duration
}

func newModuleCheck(cfg Config, limits service.Limits, sources []netip.Prefix) (*moduleCheck, error) {
	svc, err := service.New(service.Config{Limits: limits, AllowedSources: sources})
	if err != nil {
		return nil, err
	}
	return &moduleCheck{sources: sources, service: svc, offset: cfg.ScrapeTimeoutOffset, maxTimeout: svc.Limits().MaxTimeout}, nil
}

// checkTarget stands for the targets of scrapes when a module's request is
// checked: any name will do.
var checkTarget = &netprobev1.Target{Host: "localhost", Port: 1}

// modules checks every module of set: its source_ip_address is one the
// server may bind (--allow-source), and its request is valid.
func (c *moduleCheck) modules(set *modules.Set) error {
	for _, name := range set.Names() {
		m := set.Modules[name]
		if m.Source.IsValid() && !slices.ContainsFunc(c.sources, func(p netip.Prefix) bool { return p.Contains(m.Source) }) {
			return fmt.Errorf("module %s: source_ip_address %s is not an address this server may bind (probed --allow-source)", name, m.Source)
		}
		// A module that names a file it could not read loads, and its
		// scrapes say why (as blackbox_exporter's do).
		if m.Err != nil {
			continue
		}
		timeout, _ := scrapeTimeout(http.Header{}, c.offset, m.Timeout, c.maxTimeout)
		connect, fetch := m.Request(checkTarget, timeout)
		var err error
		if connect != nil {
			if m.Trace != nil {
				// The trace's timeout as the file has it, which a scrape
				// may shorten (modules.Budget), is held to the server's
				// maximum.
				connect.Trace.Timeout = m.Trace.GetTimeout()
			}
			err = c.service.CheckConnect(connect)
		} else {
			err = c.service.CheckFetch(fetch)
		}
		if err != nil {
			why := violations(err)
			if m.ClientCert != nil {
				why += fmt.Sprintf(" (the module's client certificate is presented as the client identity %s%s)", modules.IdentityPrefix, name)
			}
			return fmt.Errorf("module %s cannot be scraped: %s", name, why)
		}
	}
	return nil
}

// moduleKeys are the module file's names of the request's fields that
// differ from them, for the errors of the module check.
var moduleKeys = map[string]string{"icmp.payload_bytes": "icmp.payload_size"}

// violations lists the field violations of a refused request, named as
// the module file names them.
func violations(err error) string {
	var out []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				field := v.GetField()
				if key, ok := moduleKeys[field]; ok {
					field = key
				}
				if strings.HasPrefix(field, "trace.") {
					field = "netprobe." + field
				}
				out = append(out, field+": "+v.GetDescription())
			}
		}
	}
	if len(out) == 0 {
		return status.Convert(err).Message()
	}
	return strings.Join(out, "; ")
}

// ModuleCheck returns the check of the modules a server with cfg, limits
// and sources would run, for modules.Open and modules.LoadChecked.
func ModuleCheck(cfg Config, limits service.Limits, sources []netip.Prefix) (func(*modules.Set) error, error) {
	check, err := newModuleCheck(cfg, limits, sources)
	if err != nil {
		return nil, err
	}
	return check.modules, nil
}
