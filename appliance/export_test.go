package appliance

import "github.com/nats-io/nats.go"

// ConnectCoord returns an in-process connection to the coordination
// account: tests play a part of the appliance itself with it.
func (a *Appliance) ConnectCoord(name string) (*nats.Conn, error) { return a.nats.ConnectCoord(name) }

// MaxFrameLimit is the largest devices.max_frame the configuration takes.
const MaxFrameLimit = maxFrameLimit
