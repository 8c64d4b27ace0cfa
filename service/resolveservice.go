package service

import (
	"context"
	"strconv"
	"time"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/services"
)

// ResolveService implements netprobev1.ProbeServiceServer.
func (s *Server) ResolveService(_ context.Context, req *netprobev1.ResolveServiceRequest) (*netprobev1.ResolveServiceResponse, error) {
	start := time.Now()
	protocol, err := validateResolveService(req)
	if err != nil {
		return nil, err
	}
	var e *services.Entry
	var ok bool
	var address string
	if req.GetName() != "" {
		e, ok = s.cfg.Services.ByName(req.GetName(), protocol)
		address = req.GetName()
	} else {
		e, ok = s.cfg.Services.ByPort(uint16(req.GetPort()), protocol)
		address = strconv.FormatUint(uint64(req.GetPort()), 10)
	}
	if !ok {
		return &netprobev1.ResolveServiceResponse{
			Name:     req.GetName(),
			Port:     req.GetPort(),
			Protocol: protocol,
			Error:    unknownService(address, protocol, start),
		}, nil
	}
	src := netprobev1.ServiceSource_SERVICE_SOURCE_SYSTEM
	if e.Source == services.Builtin {
		src = netprobev1.ServiceSource_SERVICE_SOURCE_BUILTIN
	}
	return &netprobev1.ResolveServiceResponse{
		Name:     e.Name,
		Port:     uint32(e.Port),
		Protocol: e.Protocol,
		Aliases:  e.Aliases,
		Source:   src,
	}, nil
}
