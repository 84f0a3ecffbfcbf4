// Package transports holds the built-in SMS transport plugins (smpp, modem,
// outbox), each in its own sub-package built on plugins/sdk.
package transports
