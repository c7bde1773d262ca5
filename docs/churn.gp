$ours_none << EOD
1 238.5 355
2 543.9 5000
4 755.4 3868
8 845.5 9906
16 752.2 30774
32 864.0 27453
EOD
$ours_uid << EOD
1 226.8 3584
2 581.9 1965
4 845.8 5283
8 818.4 10539
16 778.5 23282
32 676.6 49827
EOD
$ours_pid << EOD
1 251.9 2759
2 425.3 7125
4 498.2 9582
8 425.2 61680
16 536.9 34793
32 475.8 59672
EOD
$lttng_none << EOD
1 120.0 NaN
2 222.8 NaN
4 307.1 NaN
8 315.1 NaN
16 241.4 NaN
32 282.7 NaN
EOD
$lttng_uid << EOD
1 105.5 NaN
2 104.3 NaN
4 116.8 NaN
8 105.3 NaN
16 167.6 NaN
32 145.4 NaN
EOD
$lttng_pid << EOD
1 5.8 NaN
2 5.6 NaN
4 6.3 NaN
8 5.6 NaN
16 9.0 NaN
32 12.2 NaN
EOD
set terminal pngcairo size 1200,520 noenhanced
set output 'docs/churn.png'
set multiplot layout 1,2 title 'ustrace bench churn: short-lived apps, 2-core machine'
set logscale x 2
set xlabel 'PAR (apps launched at once)'
set key below
set grid
set ylabel 'apps/s'
set logscale y 10
plot $ours_none using 1:2 with linespoints lw 2 lc rgb '#555555' dt 1 pt 7 title 'ours none (200 apps)', $ours_uid using 1:2 with linespoints lw 2 lc rgb '#1f77b4' dt 1 pt 7 title 'ours uid (200 apps)', $ours_pid using 1:2 with linespoints lw 2 lc rgb '#d62728' dt 1 pt 7 title 'ours pid (200 apps)', $lttng_none using 1:2 with linespoints lw 2 lc rgb '#555555' dt 2 pt 6 title 'lttng none (200 apps)', $lttng_uid using 1:2 with linespoints lw 2 lc rgb '#1f77b4' dt 2 pt 6 title 'lttng uid (200 apps)', $lttng_pid using 1:2 with linespoints lw 2 lc rgb '#d62728' dt 2 pt 6 title 'lttng pid (40 apps)'
set ylabel 'p99 registration latency, app-measured (us)'
plot $ours_none using 1:3 with linespoints lw 2 lc rgb '#555555' dt 1 pt 7 title 'ours none (200 apps)', $ours_uid using 1:3 with linespoints lw 2 lc rgb '#1f77b4' dt 1 pt 7 title 'ours uid (200 apps)', $ours_pid using 1:3 with linespoints lw 2 lc rgb '#d62728' dt 1 pt 7 title 'ours pid (200 apps)'
unset multiplot
