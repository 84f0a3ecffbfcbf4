// Package proto is the generated gRPC code for the protocol between
// smsmilter and its POP3 plugin (pop3.proto). The plugin side is
// plugins/pop3.Serve, the host side plugins/pop3.Start.
//
// The generated files are committed. Regenerate with `go generate` after
// changing pop3.proto, using the pinned tools (Debian's protobuf-compiler
// 3.21.12, protoc-gen-go v1.36.6, protoc-gen-go-grpc v1.3.0, the version
// that matches the grpc module go-plugin v1.8.0 pins);
// TestGeneratedCodeIsCurrent checks the committed code when they are on PATH.
package proto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative pop3.proto
