package client

import (
	"context"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// ServiceSource says which database answered a service lookup.
type ServiceSource = netprobev1.ServiceSource

// The service databases.
const (
	SourceSystem  = netprobev1.ServiceSource_SERVICE_SOURCE_SYSTEM
	SourceBuiltin = netprobev1.ServiceSource_SERVICE_SOURCE_BUILTIN
)

// Service is an entry of the server's services database.
type Service struct {
	// Name is the service's official name, Aliases its other names.
	Name    string
	Aliases []string
	// Port and Protocol ("tcp" or "udp") are where it is served.
	Port     uint16
	Protocol string
	// Source is the database that had the entry.
	Source ServiceSource

	proto *netprobev1.ResolveServiceResponse
}

// Proto returns the response as the server sent it.
func (s *Service) Proto() *netprobev1.ResolveServiceResponse { return s.proto }

// ResolveService looks a service name up on the probe server, like
// getservbyname: protocol is "tcp" (also for "") or "udp". An unknown name
// is a *ProbeError at StageServiceLookup with ReasonUnknownService.
func (c *Client) ResolveService(ctx context.Context, protocol, name string) (*Service, error) {
	return c.resolve(ctx, &netprobev1.ResolveServiceRequest{Name: name, Protocol: protocol})
}

// ResolvePort looks a port up on the probe server, like getservbyport.
func (c *Client) ResolvePort(ctx context.Context, protocol string, port uint16) (*Service, error) {
	return c.resolve(ctx, &netprobev1.ResolveServiceRequest{Port: uint32(port), Protocol: protocol})
}

func (c *Client) resolve(ctx context.Context, req *netprobev1.ResolveServiceRequest) (*Service, error) {
	resp, err := c.probe.ResolveService(ctx, req)
	if err != nil {
		return nil, err
	}
	s := &Service{
		Name:     resp.GetName(),
		Aliases:  resp.GetAliases(),
		Port:     uint16(resp.GetPort()),
		Protocol: resp.GetProtocol(),
		Source:   resp.GetSource(),
		proto:    resp,
	}
	if pe := newProbeError(resp.GetError()); pe != nil {
		return s, pe
	}
	return s, nil
}
