package appliance

import "os"

// probeWritable creates and removes a file in dir: the data directory is
// checked before anything starts, so that a directory the service user
// cannot write is named as such rather than surfacing later as JetStream
// failing to start.
func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}
