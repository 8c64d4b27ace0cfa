package service

import netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"

// CheckConnect validates req as Connect does, and CheckFetch req as Fetch
// does, without probing: INVALID_ARGUMENT with a BadRequest detail, or
// nil. They are for a caller that keeps requests to make later (probed's
// modules), so that a request no call could ever run is refused when it
// is loaded rather than on every call.
func (s *Server) CheckConnect(req *netprobev1.ConnectRequest) error {
	_, err := s.validateConnect(req)
	return err
}

// CheckFetch: see CheckConnect.
func (s *Server) CheckFetch(req *netprobev1.FetchRequest) error {
	_, err := s.validateFetch(req)
	return err
}
