"""The live pipeline: capture → latest-frame slot → quality gate → classifier → store queue, plus the
published newest frame/result, the settled-field tracker and the watchdog that restarts stuck workers."""
