// Command httpsms is an example third-party transport plugin for
// smsmilter: it sends SMS through an HTTP SMS API, either Kannel's sendsms
// interface or a JSON webhook, and can receive delivery reports and
// incoming SMS on a small HTTP listener of its own. It uses nothing of
// smsmilter but plugins/sdk; see README.md.
package main

import "github.com/smsmilter/smsmilter/plugins/sdk"

func main() {
	// Create the logger before Serve (which takes over stdout/stderr);
	// its lines show up in smsmilter's log.
	sdk.Serve(newTransport(sdk.Logger()))
}
