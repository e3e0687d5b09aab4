package safefile

import "os"

// WriteSynced writes data to f, fsyncs it and closes it, returning the first error: the steps a
// state or cache file takes before it is renamed into place, so that a crash leaves either the
// old file or the whole new one.
func WriteSynced(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
